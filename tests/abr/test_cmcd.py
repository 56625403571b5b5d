"""The CMCD parser (CTA-5004): the spec's own examples, hostile input, properties."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from cadenza.abr.cmcd import (
    MAX_TEXT_CHARS,
    Token,
    parse_cmcd,
    parse_cmcd_lines,
    parse_request_cmcd,
)
from cadenza.abr.cmcd_json import from_json_object

SID = "6e2fb550-c457-11e9-bb97-0800200c9a66"
CID = "faec5fc2-ac30-11eabb37-0242ac130002"
# CTA-5004 section 5 example: every key sent as one query argument.
SPEC_QUERY = (
    "bl%3D21300%2Cbr%3D3200%2Cbs%2Ccid%3D%22faec5fc2-ac30-11eabb37-0242ac130002%22%2Cd%3D4004"
    "%2Cdl%3D18500%2Cmtp%3D48100%2Cnor%3D%22..%252F300kbps%252Ftrack.m4v%22%2Cnrr%3D%2212323-48763"
    "%22%2Cot%3Dv%2Cpr%3D1.08%2Crtp%3D12000%2Csf%3Dd%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66"
    "%22%2Cst%3Dv%2Csu%2Ctb%3D6000"
)
# The same data as the spec's header example.
SPEC_HEADERS = {
    "CMCD-Request": (
        'bl=21300,dl=18500,mtp=48100,nor="..%2F300kbps%2Ftrack.m4v",nrr="12323-48763",su'
    ),
    "CMCD-Object": "br=3200,d=4004,ot=v,tb=6000",
    "CMCD-Status": "bs,rtp=12000",
    "CMCD-Session": f'cid="{CID}",pr=1.08,sf=d,sid="{SID}",st=v',
}
EXPECTED = {
    "bl": 21300,
    "br": 3200,
    "bs": True,
    "cid": CID,
    "d": 4004,
    "dl": 18500,
    "mtp": 48100,
    "nor": "..%2F300kbps%2Ftrack.m4v",
    "nrr": "12323-48763",
    "ot": "v",
    "pr": 1.08,
    "rtp": 12000,
    "sf": "d",
    "sid": SID,
    "st": "v",
    "su": True,
    "tb": 6000,
}


def test_spec_query_example_parses_to_every_key() -> None:
    """CTA-5004 5.1: the query form, URL-decoded once by the web framework."""
    parsed = parse_cmcd(unquote(SPEC_QUERY))
    assert dict(parsed.values) == EXPECTED
    assert parsed.malformed == ()


def test_spec_header_example_matches_the_query_form() -> None:
    """CTA-5004 5.2: the four headers carry the same data as the query argument."""
    parsed = parse_request_cmcd(None, SPEC_HEADERS)
    assert dict(parsed.values) == EXPECTED


def test_tokens_stay_tokens_and_strings_stay_strings() -> None:
    parsed = parse_cmcd('ot=v,cid="v"')
    assert isinstance(parsed.values["ot"], Token)
    assert not isinstance(parsed.values["cid"], Token)


def test_false_boolean_is_kept() -> None:
    """RFC 8941 3.3.6: ``?0`` is false (CMCD omits true values' ``=?1``)."""
    assert parse_cmcd("bs=?0").values["bs"] is False


def test_v2_inner_list_of_integers() -> None:
    assert parse_cmcd("br=(3200 1600),mtp=(500 600)").values["br"] == (3200, 1600)


def test_unknown_and_custom_keys_are_kept() -> None:
    """CTA-5004 3.1: custom keys are reverse-DNS prefixed, e.g. com.example-myNumericKey."""
    parsed = parse_cmcd('com.example-myNumericKey=500,com.example-myStringKey="v",zz')
    assert dict(parsed.values) == {
        "com.example-myNumericKey": 500,
        "com.example-myStringKey": "v",
        "zz": True,
    }


def test_wrong_type_for_a_known_key_is_dropped_and_reported() -> None:
    parsed = parse_cmcd('br="fast",bl=300')
    assert dict(parsed.values) == {"bl": 300}
    assert [m.key for m in parsed.malformed] == ["br"]


def test_negative_integer_is_malformed() -> None:
    assert parse_cmcd("mtp=-5").malformed[0].key == "mtp"


def test_list_on_a_scalar_key_is_malformed() -> None:
    assert "single value" in parse_cmcd("d=(1 2)").malformed[0].reason


def test_unterminated_string_is_malformed() -> None:
    parsed = parse_cmcd('sid="abc')
    assert parsed.values == {}
    assert parsed.malformed[0].reason == "unterminated string"


def test_oversized_text_is_refused_whole() -> None:
    parsed = parse_cmcd("bl=1," * (MAX_TEXT_CHARS // 4))
    assert parsed.values == {}
    assert parsed.malformed[0].key == "*"


def test_query_wins_over_headers_for_the_same_key() -> None:
    parsed = parse_request_cmcd("bl=500", {"CMCD-Request": "bl=100"})
    assert parsed.values["bl"] == 500


def test_event_body_is_one_dictionary_a_line() -> None:
    """CMCD v2 event mode: ``application/cmcd`` bodies, newline separated."""
    entries = parse_cmcd_lines(f'e=ps,sid="{SID}",sta=p,ts=1\ne=t,sid="{SID}",bl=9000\n')
    assert [e.values["e"] for e in entries] == ["ps", "t"]
    assert entries[1].values["bl"] == 9000


def test_json_object_gets_the_same_types() -> None:
    parsed = from_json_object({"ot": "a", "br": 128.0, "sid": "x", "bs": True, "mtp": [1, 2]})
    assert dict(parsed.values) == {"ot": "a", "br": 128, "sid": "x", "bs": True, "mtp": (1, 2)}
    assert isinstance(parsed.values["ot"], Token)


def test_json_nested_object_is_malformed_not_fatal() -> None:
    parsed = from_json_object({"bl": {"deep": 1}, "br": 64})
    assert dict(parsed.values) == {"br": 64}
    assert parsed.malformed[0].key == "bl"


@given(st.text(max_size=300))
def test_any_text_parses_without_raising(text: str) -> None:
    parsed = parse_cmcd(text)
    assert len(parsed.values) + len(parsed.malformed) <= max(1, text.count(",") + 1)


_key = st.from_regex(r"[a-z][a-z0-9_.\-]{0,12}", fullmatch=True).filter(
    lambda k: (
        k not in ("br", "bl", "bs", "cid", "d", "dl", "mtp", "nor", "nrr", "ot", "pr")
        and len(k) > 3
    )
)
_value = st.one_of(
    st.integers(min_value=0, max_value=10**12),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=10**6), max_size=5).map(tuple),
)


def _encode(value: object) -> str:
    if value is True:
        return ""
    if value is False:
        return "=?0"
    if isinstance(value, int):
        return f"={value}"
    if isinstance(value, str):
        return '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert isinstance(value, tuple)
    return "=(" + " ".join(str(v) for v in value) + ")"


@given(st.dictionaries(_key, _value, max_size=10))
def test_serialised_dictionaries_round_trip(data: dict[str, object]) -> None:
    """RFC 8941 serialisation of any dictionary parses back to the same values."""
    text = ",".join(key + _encode(value) for key, value in data.items())
    parsed = parse_cmcd(text)
    assert parsed.malformed == ()
    assert dict(parsed.values) == data


@given(st.dictionaries(_key, _value, min_size=1, max_size=6), st.text(max_size=20))
def test_one_broken_member_never_loses_the_others(data: dict[str, object], junk: str) -> None:
    junk = junk.replace(",", "").replace('"', "").replace("(", "").replace(")", "")
    text = ",".join([*(key + _encode(value) for key, value in data.items()), "br=" + junk + "!"])
    parsed = parse_cmcd(text)
    assert {k: v for k, v in parsed.values.items() if k != "br"} == data


_member_key = st.one_of(
    st.sampled_from(["br", "bl", "mtp", "sid", "cid", "ot", "su", "bs", "v", "d", "nor", "pr"]),
    st.from_regex(r"[A-Za-z*][A-Za-z0-9_.*-]{0,6}", fullmatch=True),
    st.text(max_size=4),
)
_member_value = st.one_of(
    st.from_regex(r"-?[0-9]{1,17}", fullmatch=True),  # past RFC 8941's 15 digits too
    st.from_regex(r"-?[0-9]{1,13}\.[0-9]{0,4}", fullmatch=True),
    st.text(alphabet=st.characters(min_codepoint=0x1F, max_codepoint=0x80), max_size=8).map(
        lambda t: '"' + t + '"'
    ),
    st.from_regex(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+.^_`|~-]{0,6}", fullmatch=True),
    st.sampled_from(["?0", "?1", "?2", "?", "(1 2)", "(", '"a\\"b"', "1;p=2", "", "a b"]),
    st.text(max_size=6),
)
_member = st.tuples(
    st.sampled_from(["", " ", "\t"]),
    _member_key,
    st.one_of(st.none(), _member_value),
    st.sampled_from(["", " ", "\t", "\n"]),
).map(lambda m: f"{m[0]}{m[1]}{'' if m[2] is None else '=' + m[2]}{m[3]}")


@given(st.lists(_member, max_size=8))
def test_the_fast_path_parses_exactly_as_the_full_parser(members: list[str]) -> None:
    """The one-regex shortcut for common members must never change a result."""
    text = ",".join(members)
    assert parse_cmcd(text) == parse_cmcd(text, fast=False)
