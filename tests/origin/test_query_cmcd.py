"""The CMCD argument of a query, decoded without ``unquote_to_bytes``'s loop
when its escapes are the common ones: the same text aiohttp (yarl) decodes."""

from __future__ import annotations

import random
from urllib.parse import quote

import pytest
from yarl import URL

from cadenza.origin.core.request import query_arguments

PAYLOADS = (
    'bl=21300,br=128,cid="track",d=4000,mtp=2500,ot=a,sf=h,sid="s-1",st=v,v=1',
    'cid="a/b%c",sid="é"',
    "bs,su",
    "",
)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("safe", ["", "/", '="'])
def test_a_quoted_payload_decodes_as_yarl_decodes_it(payload: str, safe: str) -> None:
    query = f"sid=x&CMCD={quote(payload, safe=safe)}"
    assert query_arguments(query.encode()) == dict(URL("/x?" + query).query)


def test_any_spelling_of_escapes_decodes_as_yarl_decodes_it() -> None:
    """Upper and lower case, escaped escapes, bare ``%``: whatever the fast
    replacement leaves, the full decoding gets."""
    rng = random.Random(15)
    compared = 0
    pieces = ["%3D", "%2C", "%22", "%3d", "%2c", "%25", "%2", "%", "3D", "a", "%C3%A9", "%E9"]
    for _ in range(3000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randrange(8)))
        query = f"CMCD={value}"
        arguments = query_arguments(query.encode())
        try:
            expected = dict(URL("/x?" + query, encoded=True).query)
        except UnicodeDecodeError:
            continue
        if arguments is not None:  # None: handed over (not UTF-8)
            assert arguments == expected, value
            compared += 1
    assert compared > 1000
