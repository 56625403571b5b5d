"""Hostile input against a real origin: every answer is clean.

A real ``create_app`` listens on a loopback port (:class:`ThreadedOrigin`) and
takes raw HTTP/1.1 bytes, so nothing between the test and the server
normalises what is sent.  Its ROOT is a copy of the packaged test track,
with secrets planted next to it (``secret.txt``, ``secret.m4s``), a hidden
folder inside it, and symlinks from inside it to the secrets.

For every answer: the status is below 500; a 4xx carries a reason (the JSON
``{"error", "detail"}`` of the edge, or aiohttp's parser message); no body or
header holds ``Traceback``, a secret, ``/etc/passwd``, the origin's source
or a file-system path of the server; and (checked at the end) the session
store stayed within ``sessions_max``.

Fuzzing (hypothesis; examples per test, times ``CADENZA_FUZZ_SCALE``, 1 by
default; the whole file runs in about 20 s on two cores):

=================================  ========
test                               examples
=================================  ========
test_fuzzed_paths                  400
test_fuzzed_range_headers          250
test_fuzzed_cmcd                   250
test_fuzzed_query_filters          250
test_fuzzed_beacons                300
=================================  ========

Then a table of known nasties per input kind, and one regression test for
each bug the fuzzing found (see ``# finding`` comments).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cadenza.origin as origin
from cadenza.abr.cmcd import KEYS
from cadenza.abr.cmcd_json import from_json_object
from cadenza.origin.keys import SESSIONS
from cadenza.origin.ranges import parse_range
from cadenza.origin.settings import Settings
from tests.origin.conftest import TRACK
from tests.origin.rawhttp import Answer, ThreadedOrigin, get, parse_answer, request
from tests.origin.waiting import read_by_server, wait_for

SCALE = float(os.environ.get("CADENZA_FUZZ_SCALE", "1"))


def _examples(count: int) -> int:
    return max(1, round(count * SCALE))


# The profile every fuzz test uses: bounded, no per-example deadline (a shared
# two-core machine stalls now and then), no shrinking budget surprises.
HOSTILE = settings(
    max_examples=_examples(250),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SECRET = b"CADENZA-HOSTILE-SECRET-3b9f0c"
SESSIONS_MAX = 64
SEGMENT = f"/{TRACK}/aac-128k/seg-00001.m4s"  # below the cache limit: served from memory
LARGE_SEGMENT = f"/{TRACK}/aac-256k/seg-00001.m4s"  # above it: served by the large path
MANIFESTS = (f"/{TRACK}/master.m3u8", f"/{TRACK}/manifest.mpd")
SOURCE_DIR = str(Path(origin.__file__).resolve().parent)


class Hostile:
    """The running origin and what it serves (a plain class: hypothesis prints
    dataclass arguments field by field, and ``files`` holds megabytes)."""

    def __init__(
        self, port: int, server: ThreadedOrigin, base: Path, root: Path, files: dict[str, bytes]
    ) -> None:
        self.port = port
        self.server = server
        self.base = base  # holds root/ and the secrets next to it
        self.root = root
        self.files = files  # storage key -> bytes, every file of the root

    def __repr__(self) -> str:
        return f"Hostile(port={self.port})"

    @property
    def needles(self) -> tuple[bytes, ...]:
        """What no answer may ever contain."""
        return (
            SECRET,
            b"Traceback",
            b'File "/',
            b"root:x:0:0",
            str(self.base).encode(),
            str(self.root.resolve()).encode(),
            SOURCE_DIR.encode(),
        )


@pytest.fixture(scope="module")
def hostile(packaged_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    shutil.copytree(packaged_root, root)
    for name in ("secret.txt", "secret.m4s", "master.m3u8"):
        (base / name).write_bytes(SECRET + b" " + name.encode())
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.m4s").write_bytes(SECRET + b" hidden")
    (root / TRACK / ".secret.m4s").write_bytes(SECRET + b" dotfile")
    (root / TRACK / "evil.m4s").symlink_to(base / "secret.m4s")
    (root / "evil-dir").symlink_to(base)
    (root / TRACK / "loop.m4s").symlink_to(root / TRACK / "loop.m4s")
    (base / "root-evil").mkdir()
    (base / "root-evil" / "secret.m4s").write_bytes(SECRET + b" sibling")
    files = {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and SECRET not in path.read_bytes()
    }
    server = ThreadedOrigin(
        Settings(
            root=str(root),
            sessions_max=SESSIONS_MAX,
            cache_max_object_bytes=100_000,
            beacon_rate_per_s=10_000.0,
            beacon_burst=1_000_000,
            player_assets_dir=str(base / "no-node-modules"),
        )
    ).start()
    try:
        yield Hostile(server.port, server, base, root, files)
        sessions = server.call(server.app[SESSIONS].count())
    finally:
        server.stop()
    assert sessions <= SESSIONS_MAX  # every hostile session went through the bounded store


def _strict_json(text: str) -> Any:
    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constants)


def assert_clean(hostile: Hostile, answer: Answer, what: object, *, head: bool = False) -> None:
    """The properties every answer to hostile input has."""
    assert answer.status < 500, (what, answer)
    assert answer.status >= 100, (what, answer)
    haystack = answer.body + "\n".join(answer.headers.values()).encode("utf-8", "replace")
    for needle in hostile.needles:
        assert needle not in haystack, (what, needle, answer)
    if 400 <= answer.status < 500 and not head:
        assert answer.body.strip(), (what, "a 4xx without a reason", answer)
        if answer.headers.get("content-type", "").startswith("application/json"):
            reason = _strict_json(answer.text)
            assert isinstance(reason, dict), (what, answer)
            assert reason.get("error") and reason.get("detail"), (what, answer)


# -- paths -----------------------------------------------------------------

NASTY_SEGMENTS = (
    "..", ".", "...", "%2e%2e", "%2E%2E", "%2e", ".%2e", "%2e.", "%252e%252e", "%25252e%25252e",
    "..%2f", "..%2F", "..%5c", "..\\", "..%00", "%00", "%c0%ae%c0%ae", "%c0%af", "%e0%80%ae",
    "%c1%9c", "%ef%bc%8e%ef%bc%8e", "\uff0e\uff0e", "\u2024\u2024", "%u002e%u002e", "%%32%65",
    "..;", ";", "~", "C:", "c:\\windows", "\\\\host\\share", "secret.txt", "secret.m4s",
    "root-evil", "evil-dir", "evil.m4s", ".hidden", ".secret.m4s", "etc", "passwd", "", TRACK,
    "aac-128k", "aac-256k", "seg-00001.m4s", "master.m3u8", "manifest.mpd", "presentation.json",
    "init.mp4", "player", "v1", "sessions", "beacons", "metrics",
)  # fmt: skip
SEPARATORS = ("/", "/", "/", "\\", "%2f", "%2F", "%5c", "//", "/./", "%252f")
METHODS = (b"GET", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PROPFIND")


def _percent_all(text: str) -> str:
    return "".join(f"%{byte:02x}" for byte in text.encode("utf-8", "surrogatepass"))


ENCODINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda text: text,
    "percent-all": _percent_all,
    "percent-dots": lambda text: text.replace(".", "%2e"),
    "double": lambda text: _percent_all(text).replace("%", "%25"),
    "nfkc": lambda text: unicodedata.normalize("NFKC", text),
    "nfd": lambda text: unicodedata.normalize("NFD", text),
    "upper": str.upper,
}

segments = st.one_of(
    st.sampled_from(NASTY_SEGMENTS),
    st.text(max_size=16),
    st.text(alphabet="./\\%2eE5cCf0", max_size=12),
    st.text(alphabet="ab.-_", min_size=200, max_size=1100),  # past NAME_MAX (255)
)


@st.composite
def paths(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 19)) == 0:  # overlong: above the path limit and the line limit
        length = draw(st.integers(1_000, 20_000))
        return b"/" + b"a/" * (length // 2)
    prefix = draw(st.sampled_from(["/", "/", "/", "", "//", "http://127.0.0.1/", "/.", "*"]))
    parts = draw(st.lists(segments, max_size=8))
    separator = draw(st.sampled_from(SEPARATORS))
    text = prefix + separator.join(parts)
    encode = ENCODINGS[draw(st.sampled_from(sorted(ENCODINGS)))]
    text = encode(text)
    if draw(st.booleans()):
        text += draw(st.sampled_from(["", "?", "?a=..%2f", "#frag", "?CMCD=sid%3D%22p%22", "%"]))
    return text.encode("utf-8", "surrogatepass")


@settings(HOSTILE, max_examples=_examples(400))
@given(method=st.sampled_from(METHODS), target=paths())
def test_fuzzed_paths(hostile: Hostile, method: bytes, target: bytes) -> None:
    answer = request(hostile.port, method, target)
    assert_clean(hostile, answer, target, head=method == b"HEAD")


# -- ranges ----------------------------------------------------------------

numbers = st.one_of(
    st.just(""),
    st.integers(-10, 300_000).map(str),
    st.integers(0, 10**60).map(str),
    st.sampled_from(["\u00b2", "\u0663", "\u2460", "0x10", "1e3", " 5 ", "+5", "-0", "0" * 40]),
)
range_values = st.one_of(
    st.text(max_size=250),
    st.builds(
        "{}={}-{}".format,
        st.sampled_from(["bytes", "BYTES", " bytes ", "items", "", "bytes\t"]),
        numbers,
        numbers,
    ),
    st.lists(st.builds("{}-{}".format, numbers, numbers), max_size=4).map(
        lambda spans: "bytes=" + ",".join(spans)
    ),
)


@settings(HOSTILE, max_examples=_examples(250))
@given(
    target=st.sampled_from([SEGMENT, LARGE_SEGMENT, f"/{TRACK}/presentation.json", *MANIFESTS]),
    value=range_values,
    if_range=st.one_of(st.none(), st.text(max_size=40)),
    gzip=st.booleans(),
)
def test_fuzzed_range_headers(
    hostile: Hostile, target: str, value: str, if_range: str | None, gzip: bool
) -> None:
    headers = [(b"Range", value.encode("utf-8", "surrogatepass"))]
    if if_range is not None:
        headers.append((b"If-Range", if_range.encode("utf-8", "surrogatepass")))
    if gzip:
        headers.append((b"Accept-Encoding", b"gzip"))
    answer = request(hostile.port, b"GET", target.encode(), headers)
    assert_clean(hostile, answer, (target, value))
    whole = hostile.files[target[1:]]
    if answer.status == 206:
        unit, _, spec = answer.headers["content-range"].partition(" ")
        span, _, size = spec.partition("/")
        first, _, last = span.partition("-")
        assert (unit, int(size)) == ("bytes", len(whole))
        assert answer.body == whole[int(first) : int(last) + 1]
    elif answer.status == 416:
        assert answer.headers["content-range"] == f"bytes */{len(whole)}"
    elif answer.status == 200 and "content-encoding" not in answer.headers:
        assert answer.body == whole
    else:
        assert answer.status in (200, 400), (value, answer)


# -- CMCD -------------------------------------------------------------------

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=300,
)
cmcd_members = st.one_of(
    st.builds(
        "{}={}".format,
        st.sampled_from(sorted(KEYS)),
        st.one_of(
            st.integers(-(10**20), 10**20).map(str),
            header_text.map(lambda t: '"' + t.replace('"', "") + '"'),
            st.sampled_from(["?1", "?0", "(1 2 3)", "((((", ")", "1.5", "x", '"' + "a" * 200]),
        ),
    ),
    header_text,
)
cmcd_text = st.lists(cmcd_members, max_size=8).map(",".join)


@settings(HOSTILE, max_examples=_examples(250))
@given(
    target=st.sampled_from([SEGMENT, LARGE_SEGMENT, *MANIFESTS]),
    query=st.one_of(st.none(), cmcd_text, st.text(max_size=500)),
    raw_query=st.booleans(),
    sid=st.one_of(st.none(), st.sampled_from(["c1", "c2", ""]), st.text(max_size=200)),
    headers=st.dictionaries(
        st.sampled_from(["CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session", "ECT"]),
        st.one_of(cmcd_text, header_text),
        max_size=5,
    ),
)
def test_fuzzed_cmcd(
    hostile: Hostile,
    target: str,
    query: str | None,
    raw_query: bool,
    sid: str | None,
    headers: dict[str, str],
) -> None:
    """CMCD never fails a media request: every combination is answered with the file."""
    arguments = []
    if query is not None:
        arguments.append("CMCD=" + (query if raw_query else quote(query, safe="")))
    if sid is not None:
        arguments.append("sid=" + quote(sid, safe=""))
    url = target + ("?" + "&".join(arguments) if arguments else "")
    pairs = [(name.encode(), value.encode("utf-8")) for name, value in headers.items()]
    answer = request(hostile.port, b"GET", url.encode("utf-8", "surrogatepass"), pairs)
    assert_clean(hostile, answer, (url, headers))
    if not raw_query or query is None or all("!" <= c <= "~" and c != "#" for c in query):
        assert answer.status == 200, (url, headers, answer)
    if answer.status == 200 and target.endswith(".m4s"):
        assert answer.body == hostile.files[target[1:]]


# -- query filters and the JSON API -------------------------------------------

query_values = st.one_of(
    st.text(max_size=60),
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from(
        ["aac", "opus", "flac", "aac,opus", ",", "", "\u00b2", "\u0663", "9" * 5000, "AAC", "64"]
    ),
)


@settings(HOSTILE, max_examples=_examples(250))
@given(
    target=st.sampled_from(
        [*MANIFESTS, "/v1/sessions", "/v1/ladder/recommendation", "/v1/tracks", "/v1/sessions/"]
    ),
    query=st.dictionaries(
        st.sampled_from(
            ["codec", "min_bitrate", "max_bitrate", "sid", "limit", "max_rungs", "CMCD", "x"]
        ),
        query_values,
        max_size=5,
    ),
    suffix=st.text(max_size=40),
    gzip=st.booleans(),
)
def test_fuzzed_query_filters(
    hostile: Hostile, target: str, query: dict[str, str], suffix: str, gzip: bool
) -> None:
    if target.endswith("/"):
        target += quote(suffix, safe="")
    url = target + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    headers = [(b"Accept-Encoding", b"gzip")] if gzip else []
    answer = request(hostile.port, b"GET", url.encode(), headers)
    assert_clean(hostile, answer, url)
    assert answer.status in (200, 400, 404, 409), (url, answer)
    if answer.status == 200 and target.startswith("/v1/"):
        _strict_json(answer.text)


# -- beacons ----------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
cmcd_objects = st.dictionaries(
    st.one_of(st.sampled_from(sorted(KEYS)), st.text(max_size=12)),
    json_values,
    max_size=8,
).flatmap(
    lambda body: st.builds(
        lambda sid: {**body, "sid": sid} if sid is not None else body,
        st.one_of(st.none(), st.sampled_from(["b1", "b2", "b3"]), json_values),
    )
)


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"sid":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    cmcd_objects.map(lambda o: json.dumps(o).encode()),
    st.lists(cmcd_objects, max_size=6).map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(cmcd_text, max_size=6).map(lambda lines: "\n".join(lines).encode()),
    st.binary(max_size=2_000),
    st.builds(_deep, st.integers(1, 40_000), st.sampled_from(["list", "object"])),
    st.integers(65_537, 400_000).map(lambda n: b"x" * n),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/cmcd",
            "text/plain",
            "text/cmcd",
            "application/json; charset=utf-8",
            "application/json; charset=utf-16",
            "text/plain; charset=latin-1",
            "APPLICATION/JSON",
            "application/json;;;",
            'text/plain; charset="',
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "image/png",
            "",
        ]
    ),
    header_text,
)


def _chunked(body: bytes) -> bytes:
    pieces = [body[i : i + 7000] for i in range(0, len(body), 7000)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@settings(HOSTILE, max_examples=_examples(300))
@given(
    body=bodies,
    content_type=content_types,
    chunked=st.booleans(),
    sid=st.one_of(st.none(), st.sampled_from(["q1", "q2"]), st.text(max_size=30)),
)
def test_fuzzed_beacons(
    hostile: Hostile, body: bytes, content_type: str | None, chunked: bool, sid: str | None
) -> None:
    headers = []
    if content_type is not None:
        headers.append((b"Content-Type", content_type.encode("utf-8")))
    target = "/v1/beacons" + ("" if sid is None else "?sid=" + quote(sid, safe=""))
    if chunked:
        headers.append((b"Transfer-Encoding", b"chunked"))
        answer = request(
            hostile.port, b"POST", target.encode(), headers, _chunked(body), content_length=False
        )
    else:
        answer = request(hostile.port, b"POST", target.encode(), headers, body)
    assert_clean(hostile, answer, (body[:200], content_type))
    assert answer.status in (204, 400, 413, 415), (body[:200], content_type, answer)
    if answer.status == 204:
        _check_sessions_still_serve(hostile)


def _check_sessions_still_serve(hostile: Hostile) -> None:
    """After a hostile beacon was used: reports, steered manifests and CMSD still work."""
    listing = get(hostile.port, "/v1/sessions?limit=10000")
    assert listing.status == 200, listing
    sessions = _strict_json(listing.text)["sessions"]
    assert len(sessions) <= SESSIONS_MAX
    sid = quote(sessions[0]["sid"], safe="")
    for url in (
        f"/v1/sessions/{sid}",
        f"{MANIFESTS[0]}?sid={sid}",
        f"{MANIFESTS[1]}?sid={sid}",
        f"{SEGMENT}?sid={sid}",
    ):
        answer = get(hostile.port, url)
        assert_clean(hostile, answer, url)
        assert answer.status == 200, (url, answer)
        if url.startswith("/v1/"):
            _strict_json(answer.text)


# -- known nasties ----------------------------------------------------------

PATH_NASTIES = [
    "/../secret.txt",
    "/../../../../../../etc/passwd",
    f"/{TRACK}/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E%2Fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/%252e%252e%252fsecret.txt",
    "/%25252e%25252e/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
    "/..%c0%afsecret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt",
    "/%ef%bc%8e%ef%bc%8e/secret.txt",
    "/\uff0e\uff0e/secret.txt",
    "/%u002e%u002e/secret.txt",
    "/.%2e/secret.txt",
    "/./secret.txt",
    "//etc/passwd",
    "/etc/passwd",
    f"/{TRACK}//etc/passwd",
    "/C:/Windows/win.ini",
    "/C:%5cWindows%5cwin.ini",
    "/\\\\host\\share\\secret.txt",
    f"/{TRACK}/aac-128k/seg-00001.m4s%00.txt",
    f"/{TRACK}/aac-128k/seg-00001.m4s;.txt",
    "/%00/secret.txt",
    "/.hidden/secret.m4s",
    f"/{TRACK}/.secret.m4s",
    f"/{TRACK}/evil.m4s",
    f"/{TRACK}/loop.m4s",  # finding: a symlink loop in ROOT raised RuntimeError (a 500)
    "/evil-dir/secret.m4s",
    "/evil-dir/root-evil/secret.m4s",
    "/../root-evil/secret.m4s",
    "/root-evil/secret.m4s",
    f"/{TRACK}/../master.m3u8",
    "/master.m3u8",
    "http://127.0.0.1/../secret.txt",
    "/" + "a/" * 600,
    "/" + "a" * 9000,
    "/" + "%2e" * 3000,
    f"/{TRACK}/" + "a" * 300,  # finding: ENAMETOOLONG was a 503 "storage unavailable"
    "/" + "b" * 1000,
    f"/{TRACK}/" + "c" * 255 + "/" + "d" * 255,
    "/\u0430\u0430\u0441-128k/seg-00001.m4s",  # Cyrillic look-alikes
    f"/{TRACK}/aac\u2010128k/seg-00001.m4s",  # a Unicode hyphen
    "/\udcff",
    "/%ff%fe",
    "*",
]


@pytest.mark.parametrize("target", PATH_NASTIES)
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_known_nasty_paths_are_refused(hostile: Hostile, target: str, method: bytes) -> None:
    answer = request(hostile.port, method, target.encode("utf-8", "surrogatepass"))
    assert_clean(hostile, answer, target, head=method == b"HEAD")
    assert answer.status in (400, 404), (target, answer)


RANGE_NASTIES = [
    ("bytes=0-0", 206),
    ("bytes=-0", 416),
    ("bytes=999999999999-", 416),
    ("bytes=5-1", 200),
    ("bytes=0-1,2-3", 200),
    ("bytes=--1", 200),
    ("bytes=0-" + "9" * 190, 206),
    ("bytes=0-" + "9" * 300, 200),
    ("bytes=0x10-", 200),
    ("bytes=1e3-", 200),
    ("bytes=+5-", 200),
    ("items=0-1", 200),
    ("bytes=\u00b2-", 200),  # finding: superscript two passed isdigit(), then int() raised
    ("bytes=0-\u00b2", 200),
    ("bytes=-\u00b2", 200),
    ("bytes=\u0663-", 200),  # Arabic-Indic three: not an RFC 9110 digit
    ("bytes=\u2460-", 200),
    ("", 200),
    ("bytes=", 200),
    ("bytes=-", 200),
]


@pytest.mark.parametrize("target", [SEGMENT, LARGE_SEGMENT])
@pytest.mark.parametrize(("value", "status"), RANGE_NASTIES)
def test_known_nasty_ranges(hostile: Hostile, target: str, value: str, status: int) -> None:
    answer = request(hostile.port, b"GET", target.encode(), [(b"Range", value.encode())])
    assert_clean(hostile, answer, value)
    assert answer.status == status, (value, answer)


CMCD_NASTIES = [
    "sid%3D%22x%22%2Cmtp%3D999999999999999%2Cd%3D999999999999999%2Cbr%3D999999999999999",
    "sid%3D%22x%22%2Cbr%3D(" + "1%20" * 200 + ")",
    "(" * 500,
    "sid%3D%22" + "a" * 4000 + "%22",
    "%ff%fe%00",
    "sid%3D%22x%22%2C" * 300,
    "bl%3D1e999",
    "sid%3D%22%C3%A9%22",
    "sid%3D%22%FF%22",
]


@pytest.mark.parametrize("value", CMCD_NASTIES)
@pytest.mark.parametrize("target", [SEGMENT, *MANIFESTS])
def test_known_nasty_cmcd_still_serves(hostile: Hostile, value: str, target: str) -> None:
    answer = get(hostile.port, f"{target}?CMCD={value}")
    assert_clean(hostile, answer, value)
    assert answer.status == 200, (value, answer)


CMCD_HEADER_NASTIES = [
    {"CMCD-Session": 'sid="' + "s" * 4000 + '"'},
    {"CMCD-Session": 'sid="h-nasty"', "CMCD-Request": "mtp=999999999999999,bl=-1"},
    {"CMCD-Session": 'sid="h-nasty"', "CMCD-Object": "br=(" + "1 " * 100 + "),d=1,ot=a"},
    {"CMCD-Session": "sid=(((((", "CMCD-Status": "bs=?2"},
    {"CMCD-Session": 'sid="\u00e9"'},
    {"ECT": "4g" * 1000, "CMCD-Session": 'sid="h-ect"'},
]


@pytest.mark.parametrize("headers", CMCD_HEADER_NASTIES)
def test_known_nasty_cmcd_headers_still_serve(hostile: Hostile, headers: dict[str, str]) -> None:
    answer = get(hostile.port, SEGMENT, **headers)
    assert_clean(hostile, answer, headers)
    assert answer.status == 200, (headers, answer)


QUERY_NASTIES = [
    (f"{MANIFESTS[0]}?codec=\u00b2", 400),
    (f"{MANIFESTS[0]}?min_bitrate=\u00b2", 400),  # finding: isdigit() then int()
    (f"{MANIFESTS[1]}?max_bitrate=\u0663", 400),
    (f"{MANIFESTS[0]}?max_bitrate=" + "9" * 5000, 400),
    (f"{MANIFESTS[0]}?codec=flac&max_bitrate=1", 404),
    (f"{MANIFESTS[0]}?min_bitrate=300&max_bitrate=100", 400),
    (f"{MANIFESTS[0]}?codec=%ff%fe", 400),
    (f"{MANIFESTS[0]}?codec=&min_bitrate=&max_bitrate=", 400),
    ("/v1/sessions?limit=\u00b2", 400),  # finding: isdigit() then int()
    ("/v1/sessions?limit=" + "1" * 5000, 400),  # finding: int() of > 4300 digits
    ("/v1/sessions?limit=0", 400),
    ("/v1/sessions?limit=-1", 400),
    ("/v1/ladder/recommendation?max_rungs=\u00b2", 400),  # finding: isdigit() then int()
    ("/v1/ladder/recommendation?codec=mp3", 400),
    ("/v1/sessions/" + "%ff" * 100, 404),
    ("/v1/sessions/" + "s" * 5000, 404),
    ("/v1/sessions/%00", 404),
]


@pytest.mark.parametrize(("url", "status"), QUERY_NASTIES)
def test_known_nasty_queries(hostile: Hostile, url: str, status: int) -> None:
    answer = get(hostile.port, url)
    assert_clean(hostile, answer, url)
    assert answer.status == status, (url, answer)


BEACON_NASTIES: list[tuple[bytes, str | None, int]] = [
    (b"x" * 70_000, "application/json", 413),
    (b"[" * 30_000 + b"]" * 30_000, "application/json", 400),
    (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "application/json", 400),
    (b'{"sid": 5}', "application/json", 400),
    (b'{"sid": ["a"]}', "application/json", 400),
    (b'{"sid": {"a": 1}}', "application/json", 400),
    (b'{"sid": null}', "application/json", 400),
    (b'"sid"', "application/json", 400),
    (b"[1, 2, 3]", "application/json", 400),
    (b"[]", "application/json", 400),
    (b"[{}]" * 1, "application/json", 400),
    (json.dumps([{"sid": "n"}] * 300).encode(), "application/json", 400),
    (b'{"sid": "\\ud800"}', "application/json", 400),
    (b'{"sid": "n1", "mtp": 1' + b"0" * 400 + b"}", "application/json", 204),  # finding
    (b'{"sid": "n2", "br": 1' + b"0" * 400 + b', "d": 1' + b"0" * 400 + b', "ot": "a"}',
     "application/json", 204),  # finding
    (b'{"sid": "n3", "mtp": 1e308, "d": 1e308}', "application/json", 204),  # finding
    (b'{"sid": "n4", "mtp": Infinity, "bl": NaN, "br": -Infinity}', "application/json", 204),
    (b'{"sid": "n5", "url": "http://x/../../etc/passwd", "ttlb": 1}', "application/json", 204),
    (b'{"sid": "n6", "url": "' + b"%" * 2000 + b'", "ttlb": 1}', "application/json", 204),
    (b'{"sid": "n7", "ttlb": 1' + b"0" * 400 + b', "url": "/track/aac-128k/seg-00001.m4s"}',
     "application/json", 204),
    (b"\xff\xfe\x00\x00", "application/json", 400),
    (b"\xff\xfe\x00\x00", "application/cmcd", 400),
    (b'sid="c"\n' * 300, "application/cmcd", 400),
    (b'sid="c"', None, 415),
    (b'sid="c"', "image/png", 415),
    (b'sid="c"', "application/json", 400),
    (b'sid="n8",mtp=999999999999999,d=999999999999999', "application/cmcd", 204),
]  # fmt: skip


@pytest.mark.parametrize(("body", "content_type", "status"), BEACON_NASTIES)
def test_known_nasty_beacons(
    hostile: Hostile, body: bytes, content_type: str | None, status: int
) -> None:
    headers = [] if content_type is None else [(b"Content-Type", content_type.encode())]
    answer = request(hostile.port, b"POST", b"/v1/beacons", headers, body)
    assert_clean(hostile, answer, body[:100])
    assert answer.status == status, (body[:100], answer)
    if status == 204:
        _check_sessions_still_serve(hostile)


# -- regressions for what the fuzzing found ---------------------------------


@pytest.mark.parametrize(
    "value", ["bytes=\u00b2-", "bytes=0-\u00b2", "bytes=-\u00b2", "bytes=\u0663-3"]
)
def test_range_parser_takes_only_ascii_digits(value: str) -> None:
    """finding: ``str.isdigit`` is true for '²' (int() then raised: a 500) and for
    other scripts' digits (which RFC 9110's DIGIT is not)."""
    assert parse_range(value, 1000) is None


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**15, 1e300, float("inf")])
def test_json_cmcd_numbers_out_of_range_are_malformed(value: float) -> None:
    """finding: a JSON beacon's 400-digit integer became a session's ``mtp``, and
    ``mtp * 1000.0`` raised OverflowError (a 500); now it is dropped and counted
    like an out-of-range value in the text form (RFC 8941: at most 15 digits)."""
    parsed = from_json_object({"sid": "x", "mtp": value, "bl": 5})
    assert dict(parsed.values) == {"sid": "x", "bl": 5}
    assert [m.key for m in parsed.malformed] == ["mtp"]


def test_missing_player_library_names_no_server_path(hostile: Hostile) -> None:
    """finding: the 404 for a missing player library named its absolute path."""
    answer = get(hostile.port, "/player/lib/hls.min.js")
    assert answer.status == 404
    assert_clean(hostile, answer, "player lib")


def test_readyz_names_no_server_path(tmp_path: Path) -> None:
    """finding: /readyz with a missing ROOT put the absolute path in its 503 body."""
    server = ThreadedOrigin(Settings(root=str(tmp_path / "gone"))).start()
    try:
        answer = get(server.port, "/readyz")
    finally:
        server.stop()
    assert answer.status == 503
    assert str(tmp_path).encode() not in answer.body
    assert _strict_json(answer.text)["detail"]


def test_large_objects_answer_like_cached_ones(hostile: Hostile) -> None:
    """finding: objects above the cache limit went through aiohttp's FileResponse,
    whose Range rules differ (a malformed or multi-range header was a 416 with an
    empty body; RFC 9110 says ignore it, as the cached path does)."""
    whole = hostile.files[LARGE_SEGMENT[1:]]
    full = get(hostile.port, LARGE_SEGMENT)
    assert (full.status, full.body, full.headers["x-cadenza-cache"]) == (200, whole, "bypass")
    assert full.headers["content-type"] == "audio/mp4"
    etag = full.headers["etag"]
    assert get(hostile.port, LARGE_SEGMENT, If_None_Match=etag).status == 304
    head = request(hostile.port, b"HEAD", LARGE_SEGMENT.encode())
    assert (head.status, head.headers["content-length"], head.body) == (200, str(len(whole)), b"")
    part = get(hostile.port, LARGE_SEGMENT, Range="bytes=10-19")
    assert (part.status, part.body) == (206, whole[10:20])
    assert part.headers["content-range"] == f"bytes 10-19/{len(whole)}"
    stale = get(hostile.port, LARGE_SEGMENT, Range="bytes=10-19", If_Range='"other"')
    assert (stale.status, stale.body) == (200, whole)
    matching = get(hostile.port, LARGE_SEGMENT, Range="bytes=-5", If_Range=etag)
    assert (matching.status, matching.body) == (206, whole[-5:])


def test_beacon_body_split_on_the_wire_is_read_whole(hostile: Hostile) -> None:
    """finding: ``request.content.read(limit + 1)`` returns the bytes that have
    arrived so far, so a beacon whose body came in two TCP segments (chunked
    encoding, a slow link) was cut short and refused as bad JSON."""
    body = json.dumps({"sid": "split", "bl": 1234}).encode()
    head = (
        b"POST /v1/beacons HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=10) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (10, body[:10]))
        # The server has read the head and the first chunk: the rest comes in a later read.
        client_port = sock.getsockname()[1]
        wait_for(lambda: read_by_server(hostile.port, client_port), "the first chunk read")
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 10, body[10:]))
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    answer = parse_answer(raw)
    assert answer.status == 204, answer
    report = get(hostile.port, "/v1/sessions/split")
    assert _strict_json(report.text)["last_bl_ms"] == 1234


@pytest.mark.parametrize("sid", ["{", "a}b", "x/y", "%2F", "é ü", "?#"])
def test_any_valid_sid_has_a_report(hostile: Hostile, sid: str) -> None:
    """finding: ``/v1/sessions/{sid}`` used aiohttp's default ``[^{}/]+``, so a
    session whose sid held a brace or a slash (both valid CMCD strings) could not
    be looked up: the request fell through to the file route (400 bad_path)."""
    beacon = request(
        hostile.port,
        b"POST",
        b"/v1/beacons",
        [(b"Content-Type", b"application/json")],
        json.dumps({"sid": sid, "bl": 77}).encode(),
    )
    assert beacon.status == 204
    report = get(hostile.port, "/v1/sessions/" + quote(sid, safe=""))
    assert report.status == 200, report
    assert _strict_json(report.text)["sid"] == sid


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X-Pad-%d" % index, b"v") for index in range(100)],  # over max_headers (64)
        [(b"CMCD-Request", b"bl=" + b"1" * 9000)],  # over max_header_bytes (8190)
        [(b"Range", b"bytes=0-" + b"0" * 9000)],
        [(b"X-" + b"n" * 9000, b"v")],
    ],
    ids=["many", "long-cmcd", "long-range", "long-name"],
)
def test_oversized_request_heads_are_refused_with_a_reason(
    hostile: Hostile, headers: list[tuple[bytes, bytes]]
) -> None:
    answer = request(hostile.port, b"GET", SEGMENT.encode(), headers)
    assert_clean(hostile, answer, headers[0][0][:20])
    assert answer.status in (400, 431), answer
