"""Differential HTTP/1.1 conformance: the fast path, aiohttp, and h11.

``cadenza serve ROOT`` answers HTTP/1.1 on two paths: the fast transport
(httptools, ahead of aiohttp) and aiohttp itself.  Two real ``cadenza serve``
processes run on loopback for this module, one with ``CADENZA_FAST_PATH=false``,
over the same packaged track (plus a hidden folder and a dotfile); both are
warmed with every file in the same order, so their caches and session stores
see the same requests.  Every case sends the same raw bytes, in the same
pieces, to both (:mod:`tests.origin.differential`) and checks:

1. the same answer from both: status line, headers, body, and whether the
   connection stayed open (a ``Connection: close`` probe is sent once the
   expected replies are in: only a connection the server kept answers it).
   Normalised: ``Date`` dropped; ``Server`` compared (both paths claim
   aiohttp's, and a difference would tell a client which path answered);
   header names case-insensitive, fields compared as a list sorted by name in
   which a repeated field keeps the order of its lines (the only order with a
   meaning, RFC 9110 5.3); the body of ``/metrics`` and of aiohttp's ``400``
   parser errors (which quote the bytes buffered when parsing stopped) not
   compared.  Session reports (``/v1/sessions/{sid}``) of the sessions a case
   names are compared too, wall-clock fields and the origin's own throughput
   measurement aside (CMSD ``etp``, a measurement, is compared for presence only).
2. h11 as the reference reading of the bytes, with the tightenings and the
   allowance of :func:`tests.origin.differential.read_requests` (only HTTP/1.0
   and 1.1; CL+TE closes; whitespace runs in a request line TOLERATED): a
   request it refuses gets a 4xx, 501 or 505, or nothing, and the connection
   closes; each request it accepts gets an answer unless an error answer closed
   the connection first; the connection closes after a request that must close
   it (RFC 9112 9.3, 9.6, 6.1); status lines are HTTP/1.0 or HTTP/1.1 (RFC 9112
   2.3: never a version the server does not speak).
3. ``Accept-Encoding``: no gzip unless gzip is acceptable (RFC 9110 12.5.3).

:data:`KNOWN_DIFFERENCES` lists the intended, permanent differences between the
two paths (none).  :data:`AIOHTTP_PIPELINE_FAULTS` lists two pipelines that aiohttp
answers wrongly (one 400 for a whole read) and the fast path answers as h11 does; for
those the fast path is checked against h11 and aiohttp against its documented fault.

Cases (the hypothesis examples scale with ``CADENZA_FUZZ_SCALE``, 1 by default;
the test_accept_encoding cases ask for three manifests each):

=========================================  =====
test                                       cases
=========================================  =====
test_routes_are_answered_alike             62
test_accept_encoding_follows_rfc_9110      17
test_request_lines_are_read_alike          27
test_hosts_are_read_alike                  8
test_smuggling_attempts_are_read_alike     26
test_pipelined_requests_are_read_alike     8
test_heads_split_byte_by_byte              7
test_one_connection_leaves_others_alone    1
test_mutated_requests (hypothesis)         150
test_pipelined_mixtures (hypothesis)       60
test_the_reference_reads_as_documented     14
test_replies_are_split_by_their_framing    1
test_gzip_acceptability_is_read_as_...     1
=========================================  =====

174 test ids (pytest --collect-only): 172 single cases and two hypothesis
tests of up to 210 examples, so 382 cases in all.  The file runs in about
10 s on two loaded cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.origin.conftest import TRACK
from tests.origin.differential import (
    Ending,
    Exchange,
    Reading,
    Reply,
    Verdict,
    exchange,
    normalise,
    read_requests,
    split_replies,
)
from tests.origin.originproc import OriginProcess, cadenza_serve
from tests.origin.rawhttp import get

SCALE = float(os.environ.get("CADENZA_FUZZ_SCALE", "1"))


def _examples(count: int) -> int:
    return max(1, round(count * SCALE))


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Differences between the two paths that are intended and permanent, as
# (lower-case header name -> why only one path sends it).  Such a header is
# dropped before the comparison.  None today: the fast path claims aiohttp's
# answers header for header.
KNOWN_DIFFERENCES: Final[dict[str, str]] = {}

# Pipelines that aiohttp answers wrongly and the fast path answers as h11 and RFC 9112
# 9.6 read them, as (case id -> why).  For these the fast path must still agree with h11,
# and aiohttp must still give exactly its documented single 400: if aiohttp is fixed the
# case fails, and the entry goes.
AIOHTTP_PIPELINE_FAULTS: Final[dict[str, str]] = {
    "then-malformed": "aiohttp answers a read holding valid requests and then a malformed "
    "head with one 400 and drops the valid ones; the fast path answers each valid request, "
    "then hands the malformed one to aiohttp for its 400 (h11 does the same)",
    "close-in-the-middle": "aiohttp's parser refuses bytes after a Connection: close request "
    "in the same read with one 400 for the whole read; the fast path answers the requests up "
    "to and including the closing one and then closes, as RFC 9112 9.6 and h11 say",
}

SEGMENT = f"/{TRACK}/aac-128k/seg-00001.m4s"
LARGE_SEGMENT = f"/{TRACK}/flac/seg-00001.m4s"  # above cache_max_object_bytes: streamed
INIT = f"/{TRACK}/aac-128k/init.mp4"
PLAYLIST = f"/{TRACK}/aac-128k/playlist.m3u8"
MASTER = f"/{TRACK}/master.m3u8"
MPD = f"/{TRACK}/manifest.mpd"
CACHE_MAX_OBJECT_BYTES = 100_000
# Clock fields of a session report, and the origin's own timing of the session.
SESSION_TIMES = ("first_seen_s", "last_seen_s", "origin_throughput_kbps")


@dataclass(frozen=True, slots=True)
class Pair:
    fast: OriginProcess
    plain: OriginProcess
    facts: dict[str, str]  # ETags and Last-Modified values, for conditional requests


def _warm(origin: OriginProcess, root: Path) -> None:
    """Every file once, in one order: both caches then hold the same objects."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            get(origin.port, "/" + path.relative_to(root).as_posix())


def _serve(
    root: Path, log_dir: Path, *, fast_path: bool
) -> contextlib.AbstractContextManager[OriginProcess]:
    return cadenza_serve(
        str(root),
        log_dir,
        fast_path=str(fast_path).lower(),  # CADENZA_FAST_PATH
        manifest_max_age_s=3600,  # no revalidation while the module runs
        cache_max_object_bytes=CACHE_MAX_OBJECT_BYTES,
    )


@pytest.fixture(scope="module")
def pair(packaged_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("conformance")
    root = base / "root"
    shutil.copytree(packaged_root, root)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.m4s").write_bytes(b"hidden")
    (root / TRACK / ".secret.m4s").write_bytes(b"dotfile")
    with (
        _serve(root, base, fast_path=True) as fast,
        _serve(root, base, fast_path=False) as plain,
    ):
        for origin in (fast, plain):
            _warm(origin, root)
        # The warm-up's requests (``Connection: close``) were all handed over:
        # proof that the fast path is on in one server and off in the other.
        assert _handovers(fast) > 0, "the fast path is off"
        assert _handovers(plain) == 0, "the fast path is on with CADENZA_FAST_PATH=false"
        segment = get(fast.port, SEGMENT)
        master = get(fast.port, MASTER)
        gz_master = get(fast.port, MASTER, accept_encoding="gzip")
        facts = {
            "seg_etag": segment.headers["etag"],
            "seg_lm": segment.headers["last-modified"],
            "master_etag": master.headers["etag"],
            "gz_etag": gz_master.headers["etag"],
        }
        yield Pair(fast, plain, facts)


# -- building requests and comparing answers --------------------------------


def req(
    target: str | bytes,
    *headers: str | bytes,
    method: str = "GET",
    version: str = "HTTP/1.1",
    host: bool = True,
    body: bytes = b"",
) -> bytes:
    """One request head (CRLF-framed) and body, bytes exactly as given."""
    line = f"{method} ".encode() + _b(target) + (f" {version}".encode() if version else b"")
    lines = [line, *([b"Host: 127.0.0.1"] if host else []), *map(_b, headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _b(text: str | bytes) -> bytes:
    return text.encode("latin-1") if isinstance(text, str) else text


@dataclass(frozen=True, slots=True)
class Outcome:
    reading: Reading
    fast: Exchange
    plain: Exchange


def _summary(result: Exchange) -> str:
    lines = [f"ending={result.ending.value} rest={result.rest[:80]!r}"]
    for reply in result.replies:
        lines.append(f"  {reply.version.decode()} {reply.status} {list(reply.headers)}")
        lines.append(f"    body[{len(reply.body)}]={reply.body[:80]!r}")
    return "\n".join(lines)


def _comparable(result: Exchange, targets: Sequence[bytes]) -> object:
    known = set(KNOWN_DIFFERENCES)
    replies = tuple(
        Reply(r.version, r.status, tuple(h for h in r.headers if h[0].lower() not in known), r.body)
        for r in result.replies
    )
    return normalise(Exchange(replies, result.ending, result.rest), targets)


def check(pair: Pair, pieces: Sequence[bytes]) -> Outcome:
    """Send ``pieces`` to both servers; assert the same answer and h11's verdict."""
    data = b"".join(pieces)
    reading = read_requests(data)
    expected = len(reading.requests) + (reading.verdict is Verdict.REJECTED)  # its error
    refused_head = None if reading.rejected_method == b"HEAD" else False
    flags = [r.method == b"HEAD" for r in reading.requests] + [refused_head]
    fast = exchange(pair.fast.port, pieces, expected, flags)
    plain = exchange(pair.plain.port, pieces, expected, flags)
    targets = [r.target for r in reading.requests]
    context = (
        f"request {data[:600]!r}\nh11: {reading.verdict.value} {reading.reason} "
        f"({len(reading.requests)} requests)\n"
        f"fast path:\n{_summary(fast)}\naiohttp:\n{_summary(plain)}"
    )
    assert _comparable(fast, targets) == _comparable(plain, targets), (
        f"the two paths differ\n{context}"
    )
    for name, result in (("fast path", fast), ("aiohttp", plain)):
        problem = reference_problem(reading, result)
        assert problem is None, f"{name}: {problem}\n{context}"
    return Outcome(reading, fast, plain)


def reference_problem(reading: Reading, result: Exchange) -> str | None:
    """What in ``result`` contradicts h11's reading of the request bytes, if anything."""
    replies = result.replies
    for reply in replies:
        if reply.version not in (b"HTTP/1.1", b"HTTP/1.0"):  # RFC 9112 2.3
            return f"status line version {reply.version!r}"
    accepted = len(reading.requests)
    last_closes = bool(reading.requests) and reading.requests[-1].must_close
    if reading.verdict is Verdict.REJECTED:
        if len(replies) > accepted + 1:
            return "answered past a request h11 refuses (the probe)"
        if len(replies) == accepted + 1 and not (
            400 <= replies[-1].status < 500 or replies[-1].status in (501, 505)
        ):
            return f"{replies[-1].status} to a request h11 refuses ({reading.reason})"
        if result.ending is not Ending.CLOSED:
            return "the connection stays open after a request h11 refuses"
    elif reading.verdict is Verdict.ACCEPTED:
        errored = bool(replies) and replies[-1].status >= 400 and result.ending is Ending.CLOSED
        if len(replies) < accepted and not errored:
            return f"{len(replies)} answers to {accepted} requests h11 accepts"
        if last_closes and len(replies) > accepted:
            return "the probe was answered after a request that must close the connection"
        if last_closes and result.ending is not Ending.CLOSED:
            return "the connection stays open after a request that must close it"
    return None


def _session_report(origin: OriginProcess, sid: str) -> tuple[int, object]:
    answer = get(origin.port, f"/v1/sessions/{sid}")
    report = json.loads(answer.body) if answer.body.startswith(b"{") else answer.text
    if isinstance(report, dict):
        for name in SESSION_TIMES:
            report.pop(name, None)
    return answer.status, report


def check_sessions(pair: Pair, sids: Sequence[str]) -> None:
    """The sessions the requests named are reported alike (clock fields aside)."""
    for sid in sids:
        fast, plain = _session_report(pair.fast, sid), _session_report(pair.plain, sid)
        assert fast == plain, f"session {sid!r}: fast path {fast} != aiohttp {plain}"


# -- every route class ------------------------------------------------------

CMCD_1 = "CMCD=bl%3D3000%2Cbr%3D128%2Csid%3D%22cf-cmcd-1%22"
ROUTES: Final[dict[str, str | bytes]] = {
    "get-master": req(MASTER),
    "head-master": req(MASTER, method="HEAD"),
    "get-mpd": req(MPD),
    "head-mpd": req(MPD, method="HEAD"),
    "get-playlist": req(PLAYLIST),
    "get-init": req(INIT),
    "head-init": req(INIT, method="HEAD"),
    "get-segment": req(SEGMENT),
    "head-segment": req(SEGMENT, method="HEAD"),
    "get-large-segment": req(LARGE_SEGMENT),
    "head-large-segment": req(LARGE_SEGMENT, method="HEAD"),
    "codec-opus-master": req(MASTER + "?codec=opus"),
    "codec-aac-mpd": req(MPD + "?codec=aac"),
    "codec-unknown": req(MASTER + "?codec=mp3"),
    "bitrate-window": req(MASTER + "?min_bitrate=100&max_bitrate=300"),
    "bitrate-inverted": req(MASTER + "?min_bitrate=300&max_bitrate=100"),
    "sid-master": req(MASTER + "?sid=cf-sid-1"),
    "sid-segment": req(SEGMENT + "?sid=cf-sid-2"),
    "sid-cmcd-segment": req(SEGMENT + "?sid=cf-sid-3&CMCD=bl%3D3000%2Cbr%3D128"),
    "cmcd-query-segment": req(SEGMENT + "?" + CMCD_1),
    "cmcd-query-mpd": req(MPD + "?CMCD=bl%3D1000%2Csid%3D%22cf-cmcd-2%22"),
    "cmcd-headers": req(SEGMENT, 'CMCD-Session: sid="cf-cmcd-3"', "CMCD-Request: bl=2000"),
    "other-query": req(SEGMENT + "?foo=bar"),
    "empty-query": req(SEGMENT + "?"),
    "inm-match": req(SEGMENT, "If-None-Match: {seg_etag}"),
    "inm-other": req(SEGMENT, 'If-None-Match: "nope"'),
    "inm-star": req(SEGMENT, "If-None-Match: *"),
    "inm-list": req(SEGMENT, 'If-None-Match: "a", {seg_etag}'),
    "inm-weak": req(SEGMENT, "If-None-Match: W/{seg_etag}"),
    "inm-gzip-master": req(MASTER, "Accept-Encoding: gzip", "If-None-Match: {gz_etag}"),
    "inm-identity-etag-gzip": req(MASTER, "Accept-Encoding: gzip", "If-None-Match: {master_etag}"),
    "ims-same": req(SEGMENT, "If-Modified-Since: {seg_lm}"),
    "ims-old": req(SEGMENT, "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"),
    "ims-garbage": req(SEGMENT, "If-Modified-Since: yesterday"),
    "ims-with-inm-other": req(SEGMENT, "If-Modified-Since: {seg_lm}", 'If-None-Match: "x"'),
    "if-match": req(SEGMENT, "If-Match: {seg_etag}"),
    "if-match-other": req(SEGMENT, 'If-Match: "nope"'),
    "if-unmodified-since-old": req(SEGMENT, "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT"),
    "range-first-100": req(SEGMENT, "Range: bytes=0-99"),
    "range-suffix": req(SEGMENT, "Range: bytes=-100"),
    "range-open": req(SEGMENT, "Range: bytes=64000-"),
    "range-multi": req(SEGMENT, "Range: bytes=0-1,5-6"),
    "range-past-end": req(SEGMENT, "Range: bytes=999999999-"),
    "range-garbage": req(SEGMENT, "Range: bytes=abc"),
    "range-other-unit": req(SEGMENT, "Range: items=0-1"),
    "range-backwards": req(SEGMENT, "Range: bytes=5-1"),
    "range-if-range-match": req(SEGMENT, "Range: bytes=0-9", "If-Range: {seg_etag}"),
    "range-if-range-other": req(SEGMENT, "Range: bytes=0-9", 'If-Range: "nope"'),
    "range-master": req(MASTER, "Range: bytes=0-9"),
    "range-with-sid": req(SEGMENT + "?sid=cf-sid-4", "Range: bytes=0-9"),
    "range-large": req(LARGE_SEGMENT, "Range: bytes=10-19"),
    "healthz": req("/healthz"),
    "head-healthz": req("/healthz", method="HEAD"),
    "metrics": req("/metrics"),
    "not-found-file": req(f"/{TRACK}/aac-128k/seg-99999.m4s"),
    "not-found-track": req("/nope/master.m3u8"),
    "track-folder": req(f"/{TRACK}/"),
    "hidden-folder": req("/.hidden/secret.m4s"),
    "hidden-file": req(f"/{TRACK}/.secret.m4s"),
    "dot-dot": req(f"/{TRACK}/aac-128k/../master.m3u8"),
    "encoded-dot-dot": req(f"/{TRACK}/%2e%2e/{TRACK}/master.m3u8"),
    "post-segment": req(SEGMENT, "Content-Length: 2", method="POST", body=b"{}"),
}
SESSIONS: Final = (
    *(f"cf-sid-{n}" for n in range(1, 5)),
    *(f"cf-cmcd-{n}" for n in range(1, 4)),
)


def _handovers(origin: OriginProcess, reason: str = r"\w+") -> float:
    """Connections the fast path handed to aiohttp (for ``reason``), from /metrics."""
    text = get(origin.port, "/metrics").text
    pattern = rf'^cadenza_fast_path_handovers_total\{{reason="{reason}"\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def _fill(pair: Pair, raw: str | bytes) -> bytes:
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return re.sub(r"\{(\w+)\}", lambda m: pair.facts[m.group(1)], text).encode("latin-1")


@pytest.mark.parametrize("raw", ROUTES.values(), ids=ROUTES.keys())
def test_routes_are_answered_alike(pair: Pair, raw: bytes) -> None:
    check(pair, [_fill(pair, raw)])
    check_sessions(pair, [sid for sid in SESSIONS if sid.encode() in raw])


# -- Accept-Encoding ---------------------------------------------------------


def gzip_acceptable(values: Sequence[str]) -> bool:
    """Is gzip an acceptable coding for these ``Accept-Encoding`` lines
    (RFC 9110 12.5.3: one list across repeated lines; ``q=0`` means "not
    acceptable"; ``*`` matches a coding not named; ``x-gzip`` is gzip, 8.4.1.3)?
    An invalid weight makes that member unacceptable."""
    weights: dict[str, float] = {}
    for member in ",".join(values).split(","):
        name, *parameters = (part.strip() for part in member.split(";"))
        name = name.lower()
        if not name or name in weights:
            continue
        weight = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                valid = re.fullmatch(r"0(\.\d{0,3})?|1(\.0{0,3})?", value.strip())
                weight = float(value) if valid else 0.0
        weights[name] = weight
    for name in ("gzip", "x-gzip"):
        if name in weights:
            return weights[name] > 0
    return weights.get("*", 0.0) > 0


ENCODINGS: Final[dict[str, tuple[str, ...]]] = {
    "none": (),
    "gzip": ("gzip",),
    "gzip-upper": ("GZIP",),
    "gzip-q0": ("gzip;q=0",),
    "gzip-q0-spaced": ("gzip ; q=0",),
    "gzip-q0.000": ("gzip;q=0.000",),
    "gzip-q0.5": ("gzip;q=0.5",),
    "star": ("*",),
    "star-q0": ("*;q=0",),
    "identity": ("identity",),
    "br-only": ("br",),
    "browser": ("gzip, deflate, br, zstd",),
    "not-gzip-token": ("notgzip",),
    "repeated-identity-gzip": ("identity", "gzip"),
    "repeated-gzip-identity": ("gzip", "identity"),
    "repeated-br-gzip": ("br", "gzip"),
    "empty": ("",),
}


@pytest.mark.parametrize("values", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_accept_encoding_follows_rfc_9110(pair: Pair, values: tuple[str, ...]) -> None:
    lines = [f"Accept-Encoding: {value}" for value in values]
    for target in (MASTER, MPD, PLAYLIST):
        outcome = check(pair, [req(target, *lines)])
        for name, result in (("fast path", outcome.fast), ("aiohttp", outcome.plain)):
            reply = result.replies[0]
            gzipped = reply.header("content-encoding") == ["gzip"]
            assert not gzipped or gzip_acceptable(values), (
                f"{name}: gzip for {target} with Accept-Encoding {values!r}"
            )


# -- request lines and targets ----------------------------------------------

REQUEST_LINES: Final[dict[str, bytes]] = {
    "http-1.0": req(SEGMENT, version="HTTP/1.0"),
    "http-1.0-keep-alive": req(SEGMENT, "Connection: keep-alive", version="HTTP/1.0"),
    "http-1.0-no-host": req(SEGMENT, version="HTTP/1.0", host=False),
    "http-2.0": req(SEGMENT, version="HTTP/2.0"),
    "http-2.0-master": req(MASTER, version="HTTP/2.0"),
    "http-1.2": req(SEGMENT, version="HTTP/1.2"),
    "http-3.0": req(SEGMENT, version="HTTP/3.0"),
    "http-0.9": b"GET " + SEGMENT.encode() + b"\r\n",
    "http-0.9-blank-line": b"GET " + SEGMENT.encode() + b"\r\n\r\n",
    "lower-case-version": req(SEGMENT, version="http/1.1"),
    "lower-case-method": req(SEGMENT, method="get"),
    "unknown-method": req(SEGMENT, method="FROB"),
    "options-asterisk": req("*", method="OPTIONS"),
    "connect-authority": req("127.0.0.1:80", method="CONNECT"),
    "double-space": req(b" " + SEGMENT.encode()),
    "tab-separator": SEGMENT.join(["GET\t", "\tHTTP/1.1\r\nHost: a\r\n\r\n"]).encode(),
    "absolute-form": req("http://127.0.0.1" + SEGMENT),
    "absolute-form-https": req("https://127.0.0.1" + MASTER),
    "fragment": req(SEGMENT + "#frag"),
    "fragment-sid-cmcd": req(SEGMENT + "?sid=cf-frag-1&CMCD=bl%3D3000%2Cbr%3D128#frag"),
    "fragment-cmcd": req(SEGMENT + "?CMCD=bl%3D3000%2Cbr%3D128%2Csid%3D%22cf-frag-2%22#f"),
    "fragment-codec": req(MASTER + "?codec=opus#frag"),
    "percent-encoded-path": req(f"/{TRACK}/aac-128k/seg-0000%31.m4s"),
    "percent-nul": req(SEGMENT + "%00"),
    "double-slash": req("/" + SEGMENT),
    "bare-lf": req(SEGMENT).replace(b"\r\n", b"\n"),
    "del-byte": req(SEGMENT + "\x7f"),
}
FRAGMENT_SESSIONS: Final = ("cf-frag-1", "cf-frag-2")


@pytest.mark.parametrize("raw", REQUEST_LINES.values(), ids=REQUEST_LINES.keys())
def test_request_lines_are_read_alike(pair: Pair, raw: bytes) -> None:
    check(pair, [raw])
    check_sessions(pair, [sid for sid in FRAGMENT_SESSIONS if sid.encode() in raw])


HOSTS: Final[dict[str, bytes]] = {
    "missing": req(SEGMENT, host=False),
    "missing-manifest": req(MASTER, host=False),
    "two-same": req(SEGMENT, "Host: 127.0.0.1"),
    "two-different": req(SEGMENT, "Host: example.com"),
    "two-manifest": req(MASTER, "Host: example.com"),
    "empty": req(SEGMENT, "Host:", host=False),
    "with-port": req(SEGMENT, "Host: 127.0.0.1:80", host=False),
    "lower-case-name": req(SEGMENT, "host: 127.0.0.1", host=False),
}


@pytest.mark.parametrize("raw", HOSTS.values(), ids=HOSTS.keys())
def test_hosts_are_read_alike(pair: Pair, raw: bytes) -> None:
    check(pair, [raw])


# -- request smuggling -------------------------------------------------------

NEXT = req(INIT)  # a second request after the first one's body: where does it start?
SMUGGLING: Final[dict[str, bytes]] = {
    "cl-te": req(SEGMENT, "Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n")
    + NEXT,
    "te-cl": req(SEGMENT, "Transfer-Encoding: chunked", "Content-Length: 40", body=b"0\r\n\r\n")
    + NEXT,
    "cl-te-post": req(
        SEGMENT,
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        method="POST",
        body=b"0\r\n\r\n",
    )
    + NEXT,
    "double-cl-same": req(SEGMENT, "Content-Length: 2", "Content-Length: 2", body=b"ab") + NEXT,
    "double-cl-different": req(SEGMENT, "Content-Length: 2", "Content-Length: 3", body=b"abc")
    + NEXT,
    "cl-list": req(SEGMENT, "Content-Length: 2, 2", body=b"ab") + NEXT,
    "cl-plus": req(SEGMENT, "Content-Length: +2", body=b"ab") + NEXT,
    "cl-negative": req(SEGMENT, "Content-Length: -1") + NEXT,
    "cl-hex": req(SEGMENT, "Content-Length: 0x2", body=b"ab") + NEXT,
    "cl-space-before-colon": req(SEGMENT, "Content-Length : 2", body=b"ab") + NEXT,
    "te-chunked-identity": req(SEGMENT, "Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n")
    + NEXT,
    "te-identity-chunked": req(SEGMENT, "Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n")
    + NEXT,
    "te-xchunked": req(SEGMENT, "Transfer-Encoding: xchunked", body=b"0\r\n\r\n") + NEXT,
    "te-upper": req(SEGMENT, "Transfer-Encoding: CHUNKED", body=b"0\r\n\r\n") + NEXT,
    "te-tab": req(SEGMENT, "Transfer-Encoding:\tchunked", body=b"0\r\n\r\n") + NEXT,
    "te-twice": req(
        SEGMENT, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"
    )
    + NEXT,
    "te-http-1.0": req(
        SEGMENT, "Transfer-Encoding: chunked", version="HTTP/1.0", body=b"0\r\n\r\n"
    ),
    "te-obs-fold": req(SEGMENT, "Transfer-Encoding:", " chunked", body=b"0\r\n\r\n") + NEXT,
    "get-body": req(SEGMENT, "Content-Length: 5", body=b"hello") + NEXT,
    "get-chunked-body": req(SEGMENT, "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n")
    + NEXT,
    "get-body-is-a-request": req(SEGMENT, f"Content-Length: {len(NEXT)}", body=NEXT),
    "upgrade-h2c": req(
        SEGMENT,
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
    ),
    "upgrade-h2c-manifest": req(MASTER, "Connection: Upgrade", "Upgrade: h2c"),
    "upgrade-websocket": req(SEGMENT, "Connection: Upgrade", "Upgrade: websocket"),
    "proxy-connection-close": req(SEGMENT, "Proxy-Connection: close"),
    "proxy-connection-keep-alive": req(SEGMENT, "Proxy-Connection: keep-alive"),
}


@pytest.mark.parametrize("raw", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_attempts_are_read_alike(pair: Pair, raw: bytes) -> None:
    check(pair, [raw])


# -- pipelining and split heads ----------------------------------------------

PIPELINES: Final[dict[str, list[bytes]]] = {
    "three-fast": [req(SEGMENT), req(MASTER), req(INIT)],
    "handover-in-the-middle": [req(SEGMENT), req(SEGMENT, "If-Match: *"), req(SEGMENT)],
    "head-then-get": [req(SEGMENT, method="HEAD"), req(SEGMENT), req(MASTER, method="HEAD")],
    "then-malformed": [req(SEGMENT), b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", req(SEGMENT)],
    "close-in-the-middle": [req(SEGMENT), req(MASTER, "Connection: close"), req(SEGMENT)],
    "sessions-filters-ranges": [
        req(SEGMENT + "?sid=cf-pipe-1&CMCD=bl%3D2000%2Cbr%3D128"),
        req(MASTER + "?codec=aac"),
        req(SEGMENT, "Range: bytes=0-9"),
        req(MPD + "?sid=cf-pipe-1"),
    ],
    "body-then-fast": [req(SEGMENT, "Content-Length: 2", body=b"ab"), req(SEGMENT)],
    "miss-then-hit": [req("/nope/seg.m4s"), req(SEGMENT), req(LARGE_SEGMENT), req(PLAYLIST)],
}


@pytest.mark.parametrize("requests", PIPELINES.values(), ids=PIPELINES.keys())
def test_pipelined_requests_are_read_alike(
    pair: Pair, requests: list[bytes], request: pytest.FixtureRequest
) -> None:
    case = request.node.callspec.id
    if case in AIOHTTP_PIPELINE_FAULTS:
        check_aiohttp_fault(pair, [b"".join(requests)])
    else:
        check(pair, [b"".join(requests)])
    check_sessions(pair, ["cf-pipe-1"])


def check_aiohttp_fault(pair: Pair, pieces: Sequence[bytes]) -> None:
    """A documented aiohttp fault (:data:`AIOHTTP_PIPELINE_FAULTS`): the fast path agrees
    with h11, and aiohttp answers exactly one 400 for the whole read."""
    data = b"".join(pieces)
    reading = read_requests(data)
    expected = len(reading.requests) + (reading.verdict is Verdict.REJECTED)
    refused_head = None if reading.rejected_method == b"HEAD" else False
    flags = [r.method == b"HEAD" for r in reading.requests] + [refused_head]
    fast = exchange(pair.fast.port, pieces, expected, flags)
    plain = exchange(pair.plain.port, pieces, expected, flags)
    context = f"request {data[:600]!r}\nfast path:\n{_summary(fast)}\naiohttp:\n{_summary(plain)}"
    problem = reference_problem(reading, fast)
    assert problem is None, f"fast path: {problem}\n{context}"
    assert len(fast.replies) >= 2, context
    assert [r.status for r in plain.replies] == [400], f"aiohttp's fault changed\n{context}"


SPLIT: Final[dict[str, bytes]] = {
    "segment": req(SEGMENT),
    "session-segment": req(SEGMENT + "?sid=cf-split-1&CMCD=bl%3D2000%2Cbr%3D128"),
    "conditional-manifest": req(MASTER, "Accept-Encoding: gzip", "If-None-Match: {gz_etag}"),
    "handover": req(SEGMENT, "If-Match: *"),
    "two-pipelined": req(SEGMENT, method="HEAD") + req(MPD),
    "obs-fold": req(SEGMENT, "X-Folded: a", " b"),
    "bare-lf": req(MASTER).replace(b"\r\n", b"\n"),
}


@pytest.mark.parametrize("raw", SPLIT.values(), ids=SPLIT.keys())
def test_heads_split_byte_by_byte(pair: Pair, raw: bytes) -> None:
    """One byte per ``send`` (``TCP_NODELAY``): each may arrive on its own."""
    data = _fill(pair, raw)
    check(pair, [data[i : i + 1] for i in range(len(data))])
    check_sessions(pair, ["cf-split-1"])


def test_one_connection_leaves_others_alone(pair: Pair) -> None:
    """A request on one connection does not change how another connection's
    bytes are read: the answers match, and the fast path reads the second
    connection's well-formed request as well-formed (it is not handed to
    aiohttp as malformed)."""
    first = req(SEGMENT, "Proxy-Connection: close")
    before = _handovers(pair.fast, "malformed")
    with contextlib.ExitStack() as stack:
        for origin in (pair.fast, pair.plain):  # the same first request to both
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", origin.port), 10))
            sock.sendall(first)
            status_line = stack.enter_context(sock.makefile("rb")).readline(1024)
            assert status_line.startswith(b"HTTP/1.1 200 "), status_line
        check(pair, [req(SEGMENT)])  # on new connections, while the first ones are open
    after = _handovers(pair.fast, "malformed")
    # The counter sees what it should: a head framed by bare newlines is one.
    bare = req(SEGMENT).replace(b"\r\n", b"\n")
    exchange(pair.fast.port, [bare], 1, [False], probe=False)
    assert _handovers(pair.fast, "malformed") == after + 1, "malformed heads are not counted"
    assert after == before, (
        f"the fast path read a well-formed request as malformed after another "
        f"connection sent {first!r}"
    )


# -- fuzzing -----------------------------------------------------------------

BASES: Final = (
    ("GET", SEGMENT, ()),
    ("HEAD", SEGMENT, ()),
    ("GET", MASTER, ("Accept-Encoding: gzip",)),
    ("GET", MPD, ()),
    ("GET", INIT, ("Range: bytes=0-9",)),
    ("GET", PLAYLIST, ('If-None-Match: "x"',)),
    ("GET", SEGMENT + "?sid=cf-fuzz-1&CMCD=bl%3D3000%2Cbr%3D128", ()),
    ("GET", MASTER + "?codec=opus", ()),
    ("GET", "/healthz", ()),
    ("GET", LARGE_SEGMENT, ()),
)
ODD_BYTES: Final = (
    "#", "#x", "%", "%00", "%2F", "%2e%2e", "\x7f", "\x80", "\xff", " ", "\t", '"', "<", "{", "|",
    "\\", "^", "`", ";", "//", "/./", "/../", "?", "&", "?sid=", "+",
)  # fmt: skip


@st.composite
def mutated_requests(draw: st.DrawFn) -> list[bytes]:
    method, target, extra = draw(st.sampled_from(BASES))
    headers = [("Host", "127.0.0.1"), *(tuple(h.split(": ", 1)) for h in extra)]
    headers.append(draw(st.sampled_from([("Accept", "*/*"), ("User-Agent", "fuzz"), ("X-A", "b")])))
    if draw(st.booleans()):  # header-name case
        index = draw(st.integers(0, len(headers) - 1))
        name = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in headers[index][0])
        headers[index] = (name, headers[index][1])
    if draw(st.booleans()):  # whitespace around a value
        index = draw(st.integers(0, len(headers) - 1))
        before, after = (
            draw(st.sampled_from(["", " ", "\t", "  "])),
            draw(st.sampled_from(["", " ", "\t"])),
        )
        headers[index] = (headers[index][0], before + headers[index][1].strip() + after)
    if draw(st.booleans()):  # a duplicated header, same or another value
        name, value = draw(st.sampled_from(headers))
        headers.append((name, draw(st.sampled_from([value, value + "x", "gzip", "identity"]))))
    fold = draw(st.sampled_from([None, "\r\n ", "\r\n\t"]))  # obs-fold in the last field
    host = draw(st.sampled_from(["keep", "keep", "keep", "missing", "twice", "empty"]))
    if host == "missing":
        headers = [h for h in headers if h[0].lower() != "host"]
    elif host == "twice":
        headers.append(("Host", "other.example"))
    elif host == "empty":
        headers[0] = ("Host", "")
    if draw(st.booleans()):  # odd bytes in the target
        position = draw(st.integers(1, len(target)))
        target = target[:position] + draw(st.sampled_from(ODD_BYTES)) + target[position:]
    form = draw(st.sampled_from(["origin", "origin", "origin", "fragment", "absolute"]))
    if form == "fragment":
        target += "#" + draw(st.sampled_from(["frag", "", "a?b=c"]))
    elif form == "absolute":
        target = "http://127.0.0.1" + target
    version = draw(
        st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", ""])
    )
    lines = [f"{method} {target}" + (f" {version}" if version else "")]
    lines += [
        f"{name}:{value}" if value[:1] in " \t" else f"{name}: {value}" for name, value in headers
    ]
    framing = draw(st.sampled_from(["none", "none", "none", "length", "chunked", "both"]))
    body = "5\r\nhello\r\n0\r\n\r\n" if framing in ("chunked", "both") else ""
    if framing in ("length", "both"):
        lines.append("Content-Length: 5")
        body = body or "hello"
    if framing in ("chunked", "both"):
        lines.append("Transfer-Encoding: chunked")
    if fold is not None:
        lines[-1] = lines[-1] + fold + "folded"
    data = ("\r\n".join(lines) + "\r\n\r\n" + body).encode("latin-1")
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=4))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@settings(FUZZ, max_examples=_examples(150))
@given(pieces=mutated_requests())
def test_mutated_requests(pair: Pair, pieces: list[bytes]) -> None:
    check(pair, pieces)


POOL: Final = (
    req(SEGMENT),
    req(SEGMENT, method="HEAD"),
    req(MASTER, "Accept-Encoding: gzip"),
    req(MPD + "?codec=aac"),
    req(INIT, "Range: bytes=0-9"),
    req(INIT, "Range: bytes=9-0"),
    req(SEGMENT, "If-Match: *"),
    req(SEGMENT + "?other=1"),
    req(SEGMENT + "?sid=cf-fuzz-2&CMCD=bl%3D2500%2Cbr%3D128"),
    req(PLAYLIST, "Connection: keep-alive"),
    req(LARGE_SEGMENT, method="HEAD"),
    req("/nope.m4s"),
    req("/healthz"),
    req(SEGMENT, "Content-Length: 3", body=b"abc"),
)
# Last only: bytes after ``Connection: close`` are refused as a batch by
# aiohttp when they arrive in one read with it, which depends on timing here
# (see test_pipelined_requests_are_read_alike[close-in-the-middle]).
LAST: Final = (b"", req(SEGMENT, "Connection: close"), req(MASTER, "Connection: close"))


@settings(FUZZ, max_examples=_examples(60))
@given(
    requests=st.lists(st.sampled_from(POOL), min_size=1, max_size=4),
    last=st.sampled_from(LAST),
    cuts=st.lists(st.integers(1, 2000), max_size=5),
)
def test_pipelined_mixtures(
    pair: Pair, requests: list[bytes], last: bytes, cuts: list[int]
) -> None:
    data = b"".join(requests) + last
    points = sorted({cut for cut in cuts if cut < len(data)})
    check(pair, [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)])


# -- the reference itself ----------------------------------------------------

READINGS: Final[dict[str, tuple[bytes, Verdict, list[bytes], bool]]] = {
    # id: (bytes, verdict, targets of the requests read, the last one must close)
    "one": (req("/a"), Verdict.ACCEPTED, [b"/a"], False),
    "pipelined": (req("/a") + req("/b", method="HEAD"), Verdict.ACCEPTED, [b"/a", b"/b"], False),
    "close-stops-reading": (
        req("/a", "Connection: close") + req("/b"),
        Verdict.ACCEPTED,
        [b"/a"],
        True,
    ),
    "http-1.0": (req("/a", version="HTTP/1.0") + req("/b"), Verdict.ACCEPTED, [b"/a"], True),
    "http-1.0-keep-alive": (
        req("/a", "Connection: keep-alive", version="HTTP/1.0") + req("/b"),
        Verdict.ACCEPTED,
        [b"/a", b"/b"],
        False,
    ),
    "cl-te-closes": (
        req("/a", "Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        Verdict.ACCEPTED,
        [b"/a"],
        True,
    ),
    "body-then-next": (
        req("/a", "Content-Length: 2", body=b"ab") + req("/b"),
        Verdict.ACCEPTED,
        [b"/a", b"/b"],
        False,
    ),
    "upgrade-refused": (
        req("/a", "Connection: Upgrade", "Upgrade: h2c") + req("/b"),
        Verdict.ACCEPTED,
        [b"/a", b"/b"],
        False,
    ),
    "http-2.0": (req("/a") + req("/b", version="HTTP/2.0"), Verdict.REJECTED, [b"/a"], False),
    "http-0.9": (b"GET /a\r\n\r\n", Verdict.REJECTED, [], False),
    "no-host": (req("/a", host=False), Verdict.REJECTED, [], False),
    "te-chunked-identity": (
        req("/a", "Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n"),
        Verdict.REJECTED,
        [],
        False,
    ),
    "double-space": (req(b"/a") + req(b" /b"), Verdict.TOLERATED, [b"/a", b"/b"], False),
    "cut-head": (req("/a")[:-2], Verdict.INCOMPLETE, [], False),
}


@pytest.mark.parametrize("case", READINGS.values(), ids=READINGS.keys())
def test_the_reference_reads_as_documented(
    case: tuple[bytes, Verdict, list[bytes], bool],
) -> None:
    data, verdict, targets, last_closes = case
    reading = read_requests(data)
    assert reading.verdict is verdict, reading.reason
    assert [request.target for request in reading.requests] == targets
    closes = bool(reading.requests) and reading.requests[-1].must_close
    assert closes == last_closes


def test_replies_are_split_by_their_framing() -> None:
    error = b"HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n"
    )
    replies, rest = split_replies(head + chunked + error + b"HTTP/1.1 2", [True, False, None])
    assert [(r.status, r.body) for r in replies] == [(200, b""), (200, b"abcd"), (400, b"bad")]
    assert rest == b"HTTP/1.1 2"
    # A refused HEAD (None) that was answered after all has no body.
    replies, rest = split_replies(head + error, [None])
    assert [(r.status, r.body) for r in replies] == [(200, b""), (400, b"bad")]


def test_gzip_acceptability_is_read_as_rfc_9110_reads_it() -> None:
    assert gzip_acceptable(["gzip"]) and gzip_acceptable(["br", "GZIP;q=0.5"])
    assert gzip_acceptable(["*"]) and gzip_acceptable(["x-gzip"])
    assert not gzip_acceptable([]) and not gzip_acceptable(["identity"])
    assert not gzip_acceptable(["gzip;q=0"]) and not gzip_acceptable(["gzip ; Q=0.000"])
    assert not gzip_acceptable(["*;q=0"]) and not gzip_acceptable(["gzip;q=0", "*"])
    assert not gzip_acceptable(["notgzip"]) and not gzip_acceptable(["gzip;q=2"])
