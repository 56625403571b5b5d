"""The CMCD parser's shortcuts (remembered members, plain integers read
without a regex) give exactly what the full parser gives, the first time a
member is seen and every time after."""

from __future__ import annotations

import pytest

from cadenza.abr.cmcd import parse_cmcd

PAYLOADS = [
    'bl=21500,br=128,cid="bench",d=4000,mtp=2300,ot=a,sf=h,sid="s-1",st=v,v=1',
    "bl=0004000,mtp=0,rtp=999999999999999",  # leading zeros, zero, the 15-digit bound
    "bl=1234567890123456,d=-5,br=12.5",  # 16 digits, negative, a decimal: malformed
    'bl="4000",sid=5,su,bs=?0',  # a string where an integer belongs, and the reverse
    "pr=2,ltc=7,com.example-n=42,zz=1",  # a decimal key given an integer; unknown keys
    "bl=\u0663,mtp=1\u0663",  # non-ASCII digits
    'cid="' + "x" * 100 + '",bl=5',  # a member too long to be remembered
    'cid="a,b",sid="c"',  # a comma inside a string
    "bl= 4000,mtp =300, d=4000 ,br=128\t",  # spaces around members
]


@pytest.mark.parametrize("text", PAYLOADS)
def test_shortcuts_parse_as_the_full_parser_first_time_and_after(text: str) -> None:
    full = parse_cmcd(text, fast=False)
    assert parse_cmcd(text) == full
    assert parse_cmcd(text) == full  # now from what was remembered


def test_the_last_of_a_repeated_key_wins_on_every_path() -> None:
    text = "bl=100,bl=200,bl=x,bl=300"
    assert parse_cmcd(text).values["bl"] == 300
    assert parse_cmcd(text) == parse_cmcd(text, fast=False)
