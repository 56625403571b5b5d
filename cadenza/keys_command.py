"""``cadenza keys rewrap --store LOC``: rotate the key-encryption key.

Every content key in the key store (a folder or ``s3://`` prefix; default
``CADENZA_KEY_STORE``) is unwrapped with the old KEK (``CADENZA_KEY_ENCRYPTION_KEY``
or ``..._FILE``) and wrapped again with the new one (``CADENZA_NEW_KEY_ENCRYPTION_KEY``
or ``..._FILE``); no media is touched.  Run it again after an interruption: keys
already wrapped with the new KEK are left alone.  Then give the packager and the origin
the new KEK.

Exit status: 0 done, 1 the store failed or a key does not unwrap with either KEK,
2 a usage error (no store, a missing or malformed KEK).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

USAGE_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    rewrap = actions.add_parser(
        "rewrap",
        help="rewrap every stored key with a new key-encryption key",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rewrap.add_argument(
        "--store",
        default=os.environ.get("CADENZA_KEY_STORE"),
        metavar="DIR|s3://BUCKET/PREFIX",
        help="the key store (default: CADENZA_KEY_STORE)",
    )


def run(args: argparse.Namespace) -> int:
    from cadenza.store.errors import StoreError
    from cadenza.store.keys import NEW_KEK_ENV, KekError, open_key_store, read_kek, require_kek
    from cadenza.store.s3client import S3Settings

    if not args.store:
        print("cadenza keys: give --store DIR|s3://BUCKET/PREFIX", file=sys.stderr)
        return USAGE_ERROR
    try:
        old = require_kek(os.environ)
        new = read_kek(os.environ, NEW_KEK_ENV)
    except KekError as exc:
        print(f"cadenza keys: {exc}", file=sys.stderr)
        return USAGE_ERROR
    if new is None:
        print(
            f"cadenza keys: set {NEW_KEK_ENV} (64 hex digits) or {NEW_KEK_ENV}_FILE to the "
            "new key-encryption key",
            file=sys.stderr,
        )
        return USAGE_ERROR
    s3 = S3Settings(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)

    async def rewrap() -> int:
        store = open_key_store(args.store, old, s3)
        try:
            return await store.rewrap(new)
        finally:
            await store.close()

    try:
        count = asyncio.run(rewrap())
    except StoreError as exc:
        print(f"cadenza keys: {exc}", file=sys.stderr)
        return 1
    print(f"cadenza keys: {count} keys rewrapped in {args.store}", file=sys.stderr)
    return 0
