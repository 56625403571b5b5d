"""``cadenza sign TRACK``: print a signed URL (see ``cadenza.origin.auth``).

The key is the first of ``signing_keys``, read like ``cadenza serve`` reads it
(``CADENZA_SIGNING_KEYS`` or the TOML file of ``--config``), never from the
command line, where other users could see it in the process list.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cadenza.origin.auth import check_scope, signed_url
from cadenza.origin.errors import SettingsError
from cadenza.origin.settings import load_settings

DEFAULT_TTL_S = 3600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("track", help="track id (the folder name below ROOT)")
    parser.add_argument(
        "--file",
        default="master.m3u8",
        help="file below the track folder the URL names (default master.m3u8; manifest.mpd "
        "for DASH)",
    )
    parser.add_argument(
        "--ttl", type=int, default=DEFAULT_TTL_S, help="seconds the URL stays valid (3600)"
    )
    parser.add_argument(
        "--scope",
        choices=("track", "file"),
        default="track",
        help="what the token grants: the whole track folder, so every playlist and segment "
        "a player resolves from the manifest (default), or only --file",
    )
    parser.add_argument(
        "--base-url", default="", help="scheme and host to prefix, e.g. https://cdn.example"
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (see docs/operating.md)")


def run(args: argparse.Namespace) -> int:
    try:
        # ROOT is not used here, but the settings require one.
        settings = load_settings({"root": "."}, config_file=args.config)
    except SettingsError as exc:
        print(f"cadenza sign: {exc}", file=sys.stderr)
        return 2
    if not settings.signing_keys:
        print(
            "cadenza sign: no signing key: set CADENZA_SIGNING_KEYS (or signing_keys in --config)",
            file=sys.stderr,
        )
        return 2
    if args.ttl <= 0:
        print("cadenza sign: --ttl must be positive", file=sys.stderr)
        return 2
    path = f"/{args.track}/{args.file.lstrip('/')}"
    scope = f"/{args.track}/" if args.scope == "track" else path
    try:
        check_scope(path)
        check_scope(scope)
    except ValueError as exc:
        print(f"cadenza sign: {exc}", file=sys.stderr)
        return 2
    expires_s = int(time.time()) + args.ttl
    key = settings.signing_keys[0].encode("utf-8")
    print(signed_url(key, scope, path, expires_s, args.base_url))
    when = datetime.fromtimestamp(expires_s, UTC).isoformat(timespec="seconds")
    print(f"cadenza sign: grants {scope} until {when}", file=sys.stderr)
    return 0
