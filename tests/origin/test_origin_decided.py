"""Origin-decided ABR over HTTP (``?abr=origin``, docs/players.md): group
manifests for a session, group segments decided per request and answered with
a redirect to the chosen rung's own URL (or its bytes), the decisions listed
in the session, on both transports, with the clock injected."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import m3u8
import pytest
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from cadenza.abr.controller import ControllerState, Reason, decide_rung
from cadenza.abr.controller_inputs import Signals
from cadenza.abr.controller_table import decision_table
from cadenza.abr.delivery import Delivery
from cadenza.abr.session import DECISIONS_KEPT, DecisionRecord, SessionState, evolve
from cadenza.abr.session_origin import decision_fields
from cadenza.manifests.hls import render_group_master
from cadenza.manifests.jsonio import presentation_from_json
from cadenza.origin.app import create_app
from cadenza.origin.keys import CLOCK
from cadenza.origin.redis_sessions import decode_session, encode_session
from cadenza.origin.settings import AbrDelivery, Settings, load_settings
from tests.nginx_edge import NginxEdge
from tests.origin.conftest import TRACK, RedisServer, free_port
from tests.origin.originproc import cadenza_serve
from tests.origin.rawhttp import ThreadedOrigin

GROUP_SEGMENT = f"/{TRACK}/group-aac/seg-{{n:05d}}.m4s"
AAC_RUNGS = ("aac-64k", "aac-128k", "aac-256k", "aac-320k")
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
# A fast link and a full buffer, as CMCD in query mode (CTA-5004).
FAST = "CMCD=bl%3D20000%2Cmtp%3D5000"


class Clock:
    """The app's clock, moved by the test: no sleeps."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


MakeDecided = Callable[..., Any]


@pytest.fixture
async def make_decided(packaged_root: Path) -> AsyncIterator[MakeDecided]:
    """``await make_decided(clock, **settings)`` -> a started aiohttp TestClient."""
    clients: list[TestClient[Any, Any]] = []

    async def make(clock: Clock, **overrides: Any) -> TestClient[Any, Any]:
        # Redirect unless asked otherwise: these tests read the decision off the 302.
        overrides.setdefault("abr_delivery", AbrDelivery.REDIRECT)
        settings = Settings(root=str(packaged_root), **overrides)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, clock=clock)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def elements(document: bytes, path: str) -> list[etree._Element]:
    found = etree.fromstring(document).xpath(path, namespaces=MPD_NS)
    assert isinstance(found, list)
    return [e for e in found if isinstance(e, etree._Element)]


def segment(n: int, sid: str, *extra: str) -> str:
    return GROUP_SEGMENT.format(n=n) + "?" + "&".join((f"sid={sid}", *extra))


def rung_of(location: str) -> str:
    """The rung folder a redirect names; it must be a rung's own segment URL."""
    resolved = urljoin(f"http://origin{GROUP_SEGMENT.format(n=1)}", location)
    match = re.fullmatch(r"http://origin/track/([^/]+)/seg-\d{5}\.m4s", resolved)
    assert match is not None, location
    assert not match.group(1).startswith("group-"), location  # never a group URL
    assert "?" not in location  # the target is the shared, cacheable object
    return match.group(1)


async def decide(client: Any, n: int, sid: str, *extra: str, **headers: str) -> str:
    response = await client.get(segment(n, sid, *extra), headers=headers, allow_redirects=False)
    assert response.status == 302, await response.text()
    assert response.headers["Cache-Control"] == "private, no-store"
    assert "Location" in response.headers["Access-Control-Expose-Headers"]
    return rung_of(response.headers["Location"])


async def report(client: Any, sid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/sessions/{sid}")
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    return data


async def warm_fast(client: Any, clock: Clock, sid: str) -> None:
    """A session that has measured a fast link: the controller picks the top rung."""
    for n in (1, 2, 3):
        clock.now_s += 1.0
        assert await decide(client, n, sid, FAST) == "aac-320k"


# -- manifests ---------------------------------------------------------------


async def test_master_lists_one_variant_per_group_with_an_assigned_session(
    make_decided: MakeDecided,
) -> None:
    client = await make_decided(Clock())
    first = await client.get(f"/{TRACK}/master.m3u8?abr=origin")
    second = await client.get(f"/{TRACK}/master.m3u8?abr=origin")
    assert first.status == 200
    assert first.headers["Cache-Control"].startswith("private")
    playlist = m3u8.loads(await first.text())
    uris = [p.uri for p in playlist.playlists]
    sids = {uri.partition("?sid=")[2] for uri in uris}
    assert [uri.partition("?")[0] for uri in uris] == [
        "group-aac/playlist.m3u8",
        "group-opus/playlist.m3u8",
    ]  # FLAC is a group of one: nothing to decide, not listed
    (sid,) = sids
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", sid)
    assert sid not in await second.text()  # every viewer gets a session of its own


async def test_the_session_named_by_sid_or_cmcd_rides_on_the_group_uris(
    make_decided: MakeDecided,
) -> None:
    client = await make_decided(Clock())
    mpd = await (await client.get(f"/{TRACK}/manifest.mpd?abr=origin&sid=s%201")).read()
    templates = elements(mpd, "//d:SegmentTemplate")
    assert [t.get("media") for t in templates] == [
        "group-aac/seg-$Number%05d$.m4s?sid=s%201",
        "group-opus/seg-$Number%05d$.m4s?sid=s%201",
    ]
    assert [t.get("initialization") for t in templates] == [
        "aac-320k/init.mp4",
        "opus-128k/init.mp4",
    ]
    by_cmcd = await client.get(f"/{TRACK}/master.m3u8?abr=origin&CMCD=sid%3D%22c1%22")
    assert "group-aac/playlist.m3u8?sid=c1" in await by_cmcd.text()
    by_header = await client.get(
        f"/{TRACK}/master.m3u8?abr=origin", headers={"CMCD-Session": 'sid="h1"'}
    )
    assert "group-aac/playlist.m3u8?sid=h1" in await by_header.text()
    assert "CMCD-Session" in by_header.headers["Vary"]  # the URL alone does not name it


async def test_filters_pick_the_groups_and_flac_alone_is_409(make_decided: MakeDecided) -> None:
    client = await make_decided(Clock())
    opus = await client.get(f"/{TRACK}/master.m3u8?abr=origin&codec=opus&sid=f1")
    assert [p.uri for p in m3u8.loads(await opus.text()).playlists] == [
        "group-opus/playlist.m3u8?sid=f1"
    ]
    flac = await client.get(f"/{TRACK}/manifest.mpd?abr=origin&codec=flac&sid=f1")
    assert flac.status == 409
    body = await flac.json()
    assert body["error"] == "not_switchable"
    assert body["groups"] == ["flac"]
    assert "two renditions" in body["reason"]
    assert (await client.get(f"/{TRACK}/group-flac/playlist.m3u8?sid=f1")).status == 409


async def test_group_manifests_are_not_capped_by_guidance(
    make_decided: MakeDecided, packaged_root: Path
) -> None:
    """A slow session's guided manifest drops the upper rungs; its origin-decided
    manifest still offers the whole group (the guidance caps the choice)."""
    client = await make_decided(Clock())
    slow = "CMCD=bl%3D2000%2Cmtp%3D90%2Csid%3D%22slow%22"
    for _ in range(4):
        await client.get(f"/{TRACK}/aac-64k/seg-00001.m4s?{slow}")
    guided = m3u8.loads(await (await client.get(f"/{TRACK}/master.m3u8?sid=slow")).text())
    assert "aac-320k/playlist.m3u8" not in [p.uri for p in guided.playlists]
    decided = await (await client.get(f"/{TRACK}/master.m3u8?abr=origin&sid=slow")).text()
    model = presentation_from_json((packaged_root / TRACK / "presentation.json").read_bytes())
    assert decided == render_group_master(model, session_id="slow")


async def test_the_group_playlist_is_private_and_names_the_session(
    make_decided: MakeDecided,
) -> None:
    client = await make_decided(Clock())
    response = await client.get(f"/{TRACK}/group-aac/playlist.m3u8?sid=p1")
    assert response.status == 200
    assert response.headers["Cache-Control"].startswith("private")
    text = await response.text()
    assert '#EXT-X-MAP:URI="../aac-320k/init.mp4"' in text
    playlist = m3u8.loads(text)
    assert [s.uri for s in playlist.segments][:2] == [
        "seg-00001.m4s?sid=p1",
        "seg-00002.m4s?sid=p1",
    ]


# -- decided segments --------------------------------------------------------


async def test_a_group_segment_redirects_to_a_rung_and_the_target_is_public(
    make_decided: MakeDecided,
) -> None:
    client = await make_decided(Clock())
    response = await client.get(segment(1, "r1"), allow_redirects=False)
    assert response.status == 302
    location = response.headers["Location"]
    assert rung_of(location) == "aac-64k"  # knowing nothing: the lowest rung
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    target = await client.get(urljoin(GROUP_SEGMENT.format(n=1), location))
    assert target.status == 200
    assert "immutable" in target.headers["Cache-Control"]
    assert target.headers["Cache-Control"].startswith("public")
    followed = await client.get(segment(2, "r1"))  # a client follows it
    assert followed.status == 200
    assert followed.url.path == f"/{TRACK}/aac-64k/seg-00002.m4s"


async def test_the_manifest_builds_the_decision_table_before_the_first_segment(
    make_decided: MakeDecided,
) -> None:
    """The decision tables (the full plan's and those of the track's last segments) are
    built off the event loop when the ?abr=origin manifest is asked for, so the decided
    segments find them cached instead of building them on the loop."""
    decision_table.cache_clear()
    client = await make_decided(Clock())
    assert (await client.get(f"/{TRACK}/master.m3u8?abr=origin&sid=t1")).status == 200
    built = decision_table.cache_info()
    assert built.currsize >= 1 and built.hits == 0
    assert (await client.get(segment(1, "t1"), allow_redirects=False)).status == 302
    # The track's last segments are planned to its end, from tables built alike.
    assert (await client.get(segment(3, "t1"), allow_redirects=False)).status == 302
    after = decision_table.cache_info()
    assert after.currsize == built.currsize and after.hits > built.hits


async def test_decisions_are_listed_and_counted(make_decided: MakeDecided) -> None:
    clock = Clock()
    client = await make_decided(clock)
    await warm_fast(client, clock, "d1")
    data = await report(client, "d1")
    assert [(d["segment"], d["rung"]) for d in data["decisions"]] == [
        (1, "aac-320k"),
        (2, "aac-320k"),
        (3, "aac-320k"),
    ]
    assert {d["reason"] for d in data["decisions"]} == {"mpc"}
    assert {d["delivery"] for d in data["decisions"]} == {"redirect"}
    assert data["requests"] == 3
    await decide(client, 1, "d1", "max_bitrate=128")  # a switch down
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_abr_decisions_total{reason="mpc"} 3.0' in metrics
    assert 'cadenza_abr_decisions_total{reason="max-bitrate"} 1.0' in metrics
    assert "cadenza_abr_switches_total 1.0" in metrics


async def test_save_data_max_bitrate_and_ect_cap_the_choice(make_decided: MakeDecided) -> None:
    clock = Clock()
    client = await make_decided(clock)
    await warm_fast(client, clock, "c1")
    clock.now_s += 1.0
    assert await decide(client, 1, "c1", FAST, **{"Save-Data": "on"}) == "aac-64k"
    # (The fixture track has three segments and the plan never looks past the last: a
    # climb back from the lowest rung is worth its switch from the first segment only.)
    clock.now_s += 1.0
    assert await decide(client, 1, "c1", FAST, "max_bitrate=200") == "aac-128k"
    clock.now_s += 1.0
    assert await decide(client, 3, "c1", FAST, ECT="2g") == "aac-64k"
    clock.now_s += 1.0
    assert await decide(client, 1, "c1", FAST, ECT="4g") == "aac-320k"  # 4g caps nothing
    reasons = [d["reason"] for d in (await report(client, "c1"))["decisions"]][-4:]
    assert reasons == [Reason.SAVE_DATA, Reason.MAX_BITRATE, Reason.ECT_CAP, Reason.MPC]
    bad = await client.get(segment(1, "c1", "max_bitrate=lots"), allow_redirects=False)
    assert bad.status == 400


async def test_unknown_group_or_segment_is_404_and_an_unknown_sid_a_new_session(
    make_decided: MakeDecided,
) -> None:
    client = await make_decided(Clock())
    assert (await client.get(f"/{TRACK}/group-nope/seg-00001.m4s?sid=u1")).status == 404
    assert (await client.get(segment(99, "u1"), allow_redirects=False)).status == 404
    assert (await client.get(f"/{TRACK}/group-aac/seg-1.m4s?sid=u1")).status == 404
    assert (await client.get(f"/{TRACK}/group-aac/init.mp4?sid=u1")).status == 404
    assert (await client.get("/v1/sessions/u1")).status == 404  # nothing decided yet
    assert await decide(client, 1, "never-seen") == "aac-64k"
    data = await report(client, "never-seen")
    assert [d["reason"] for d in data["decisions"]] == ["start-default"]
    # Without any session id the origin starts one: the decision is still made.
    anonymous = await client.get(GROUP_SEGMENT.format(n=1), allow_redirects=False)
    assert anonymous.status == 302
    rung_of(anonymous.headers["Location"])


async def test_malformed_cmcd_falls_back_to_defaults(make_decided: MakeDecided) -> None:
    client = await make_decided(Clock())
    broken = "CMCD=bl%3D%22x%22%2Cmtp%3D(((%2Csid%3D%22m1%22"
    response = await client.get(GROUP_SEGMENT.format(n=1) + "?" + broken, allow_redirects=False)
    assert response.status == 302
    assert rung_of(response.headers["Location"]) == "aac-64k"
    garbage = await client.get(segment(2, "m2", "CMCD=%FF%00%22"), allow_redirects=False)
    assert garbage.status == 302
    metrics = await (await client.get("/metrics")).text()
    assert "cadenza_cmcd_malformed_values_total" in metrics


async def test_the_clock_is_the_apps(make_decided: MakeDecided, packaged_root: Path) -> None:
    """The session's timing is the injected clock's: two requests half a second
    apart measure the first object's size over that half second."""
    clock = Clock()
    client = await make_decided(clock)
    await decide(client, 1, "t1")
    assert (await report(client, "t1"))["origin_throughput_kbps"] is None
    clock.now_s += 0.5
    await decide(client, 2, "t1")
    size_bytes = (packaged_root / TRACK / "aac-64k" / "seg-00001.m4s").stat().st_size
    expected_kbps = round(8 * size_bytes / 0.5 / 1000, 1)
    assert (await report(client, "t1"))["origin_throughput_kbps"] == expected_kbps


async def test_direct_delivery_serves_the_rung_bytes_privately(
    make_decided: MakeDecided, packaged_root: Path
) -> None:
    client = await make_decided(Clock(), abr_delivery=AbrDelivery.DIRECT)
    response = await client.get(segment(1, "x1"))
    assert response.status == 200
    assert response.history == ()
    assert response.headers["Cache-Control"] == "private"
    assert response.headers["Content-Type"] == "audio/mp4"
    body = await response.read()
    assert body == (packaged_root / TRACK / "aac-64k" / "seg-00001.m4s").read_bytes()


def test_abr_delivery_is_a_setting() -> None:
    settings = load_settings({"root": "/srv"}, {"CADENZA_ABR_DELIVERY": "direct"})
    assert settings.abr_delivery is AbrDelivery.DIRECT
    assert Settings(root="/srv").abr_delivery is AbrDelivery.ADAPTIVE  # chosen by measurement


# -- the session record ------------------------------------------------------


def test_decisions_survive_the_redis_encoding_and_old_records_still_decode() -> None:
    state = SessionState(
        "r1",
        1.0,
        2.0,
        controller=ControllerState(requests=2, last_request_s=2.0, window=b"\x00\x01\xfe\xff"),
        decisions=(
            DecisionRecord(7, "aac-128k", 128_000, Reason.MPC),
            DecisionRecord(8, "aac-256k", 256_000, Reason.MPC, Delivery.DIRECT),
        ),
        origin_rate_bps=1e6,
    )
    assert decode_session(encode_session(state)) == state
    old = json.loads(encode_session(SessionState("old", 1.0, 2.0)))
    for name in ("controller", "decisions", "origin_rate_bps", "last_media_s"):
        del old[name]
    decoded = decode_session(json.dumps(old))
    assert (decoded.controller, decoded.decisions) == (None, ())
    newer = json.loads(encode_session(state))
    newer["decisions"].append({"segment": 8, "rung": "x", "bitrate_bps": 1, "reason": "future"})
    assert decode_session(json.dumps(newer)).decisions == state.decisions
    # A decision without its delivery (an earlier replica's) or with one this version does
    # not know (a newer one's) is kept, its delivery unknown.
    mixed = json.loads(encode_session(state))
    del mixed["decisions"][1]["delivery"]
    mixed["decisions"][0]["delivery"] = "pushed"
    assert [d.delivery for d in decode_session(json.dumps(mixed)).decisions] == [None, None]


# -- both transports, raw sockets ---------------------------------------------


class KeepAlive:
    """One keep-alive connection that reads answers one by one."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._buffer = b""

    def ask(
        self, target: str, *fields: str, method: str = "GET"
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *fields]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "closed before a whole head"
            self._buffer += chunk
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = [(n.strip(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:])]
        length = 0 if method == "HEAD" else int(dict(headers).get("Content-Length", "0"))
        while len(self._buffer) < length:
            self._buffer += self.sock.recv(262144)
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return int(lines[0].split(" ", 2)[1]), headers, body

    def close(self) -> None:
        self.sock.close()


def _threaded(root: Path, clock: Clock, **overrides: Any) -> ThreadedOrigin:
    overrides.setdefault("abr_delivery", AbrDelivery.REDIRECT)  # decisions read off the 302
    origin = ThreadedOrigin(Settings(root=str(root), **overrides))
    read_clock: Callable[[], float] = clock
    origin.app[CLOCK] = read_clock
    return origin.start()


@pytest.fixture
def origins(packaged_root: Path) -> Iterator[tuple[ThreadedOrigin, ThreadedOrigin, Clock]]:
    """The fast transport and aiohttp alone, sharing one clock."""
    clock = Clock()
    fast = _threaded(packaged_root, clock)
    plain = _threaded(packaged_root, clock, fast_path=False)
    try:
        yield fast, plain, clock
    finally:
        fast.stop()
        plain.stop()


def _metric(origin: ThreadedOrigin, prefix: str) -> str:
    connection = KeepAlive(origin.port)
    try:
        _, _, body = connection.ask("/metrics")
    finally:
        connection.close()
    return "\n".join(line for line in body.decode().splitlines() if line.startswith(prefix))


def test_both_transports_decide_alike_and_the_fast_one_keeps_the_connection(
    origins: tuple[ThreadedOrigin, ThreadedOrigin, Clock],
) -> None:
    fast, plain, clock = origins
    answers: dict[str, list[tuple[int, list[tuple[str, str]]]]] = {"fast": [], "plain": []}
    requests = [
        (f"/{TRACK}/manifest.mpd?abr=origin&sid=b1", ()),
        (segment(1, "b1"), ()),
        (segment(1, "b1", FAST), ()),
        (segment(2, "b1", FAST, "max_bitrate=128"), ()),
        (segment(3, "b1", FAST), ("ECT: 2g",)),
        (segment(3, "b1", FAST), ("Save-Data: on",)),
        (segment(1, "b1", FAST), ("HEAD",)),
        (f"/{TRACK}/group-aac/playlist.m3u8?sid=b1", ()),
        (f"/{TRACK}/group-nope/seg-00001.m4s?sid=b1", ()),
    ]
    connections = {"fast": KeepAlive(fast.port), "plain": KeepAlive(plain.port)}
    try:
        for target, fields in requests:
            clock.now_s += 1.0
            method = "HEAD" if fields == ("HEAD",) else "GET"
            fields = () if method == "HEAD" else fields
            for name, connection in connections.items():
                status, headers, _ = connection.ask(target, *fields, method=method)
                answers[name].append((status, [(n, v) for n, v in headers if n != "Date"]))
    finally:
        for connection in connections.values():
            connection.close()
    assert answers["fast"] == answers["plain"]
    statuses = [status for status, _ in answers["fast"]]
    assert statuses == [200, 302, 302, 302, 302, 302, 302, 200, 404]
    rungs = [rung_of(dict(h)["Location"]) for s, h in answers["fast"] if s == 302]
    assert rungs == ["aac-64k", "aac-320k", "aac-128k", "aac-64k", "aac-64k", "aac-320k"]
    assert "Content-Length" not in dict(answers["fast"][6][1])  # HEAD, as aiohttp answers it
    # The manifest, the decided segments and the playlist were the fast
    # transport's: the connection was handed to aiohttp only at the 404 (and
    # /metrics' own connection at its path).
    # Every reason is exported from the start, at 0: only those counted are compared.
    counted = [
        line
        for line in _metric(fast, "cadenza_fast_path_handovers_total").splitlines()
        if not line.endswith(" 0.0")
    ]
    assert sorted(counted) == [
        'cadenza_fast_path_handovers_total{reason="load_failed"} 1.0',
        'cadenza_fast_path_handovers_total{reason="path"} 1.0',
    ]
    assert 'cadenza_abr_decisions_total{reason="ect-cap"} 1.0' in _metric(fast, "cadenza_abr")


def _session(origin: ThreadedOrigin, sid: str) -> dict[str, Any]:
    connection = KeepAlive(origin.port)
    try:
        status, _, body = connection.ask(f"/v1/sessions/{sid}")
    finally:
        connection.close()
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return data


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "aiohttp"])
def test_direct_delivery_measures_the_tcp_delivery_rate(
    packaged_root: Path, fast_path: bool
) -> None:
    """Served directly, the next request on the same connection reads the
    previous response's delivery rate (TCP_INFO): with the clock standing
    still, the origin's own throughput can only come from there."""
    clock = Clock()
    origin = _threaded(packaged_root, clock, abr_delivery=AbrDelivery.DIRECT, fast_path=fast_path)
    connection = KeepAlive(origin.port)
    try:
        status, headers, body = connection.ask(segment(1, "tcp1"))
        assert (status, dict(headers)["Cache-Control"]) == (200, "private")
        assert body == (packaged_root / TRACK / "aac-64k" / "seg-00001.m4s").read_bytes()
        assert _session(origin, "tcp1")["origin_throughput_kbps"] is None
        assert connection.ask(segment(2, "tcp1"))[0] == 200
        assert _session(origin, "tcp1")["origin_throughput_kbps"] > 0
        # Another connection reads nothing of this one's.
        other = KeepAlive(origin.port)
        try:
            other.ask(segment(1, "tcp2"))
            other.close()
            other = KeepAlive(origin.port)
            other.ask(segment(2, "tcp2"))
        finally:
            other.close()
        assert _session(origin, "tcp2")["origin_throughput_kbps"] is None
    finally:
        connection.close()
        origin.stop()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "aiohttp"])
def test_a_forwarded_request_reads_no_delivery_rate(packaged_root: Path, fast_path: bool) -> None:
    """Behind a trusted proxy (a CDN edge) the socket's delivery rate measures the hop
    to the proxy, not the player's link: the same two requests as above, forwarded
    for a client, leave the origin's own throughput unmeasured."""
    clock = Clock()
    origin = _threaded(
        packaged_root,
        clock,
        abr_delivery=AbrDelivery.DIRECT,
        fast_path=fast_path,
        trusted_proxies=("127.0.0.0/8",),
    )
    connection = KeepAlive(origin.port)
    forwarded = "X-Forwarded-For: 203.0.113.7"
    try:
        assert connection.ask(segment(1, "edge1"), forwarded)[0] == 200
        assert connection.ask(segment(2, "edge1"), forwarded)[0] == 200
        assert _session(origin, "edge1")["origin_throughput_kbps"] is None
        # The same connection without the proxy's word: the peer is the client.
        assert connection.ask(segment(1, "peer1"))[0] == 200
        assert connection.ask(segment(2, "peer1"))[0] == 200
        assert _session(origin, "peer1")["origin_throughput_kbps"] > 0
    finally:
        connection.close()
        origin.stop()


# -- guidance in the channels players read (guided, per-session manifests) ---

SLOW = "CMCD=br%3D128%2Cbl%3D2000%2Cd%3D4000%2Cmtp%3D90%2Cot%3Da%2Csid%3D%22{sid}%22"
PLAIN_SEGMENT = f"/{TRACK}/aac-128k/seg-00001.m4s"


async def test_guided_manifests_carry_the_sessions_start_and_max_bitrate(
    make_decided: MakeDecided, packaged_root: Path
) -> None:
    """The start (64k) and cap (128k) the session earns, in the unit players compare them
    with: those rungs' advertised bandwidth (BANDWIDTH, @bandwidth), not 64000/128000."""
    model = presentation_from_json((packaged_root / TRACK / "presentation.json").read_bytes())
    peak = {r.id: r.peak_bitrate_bps for r in model.renditions}
    client = await make_decided(Clock())
    for _ in range(8):  # 8 x 4 s at 90 kb/s: the session's own, confident estimate
        await client.get(PLAIN_SEGMENT + "?" + SLOW.format(sid="g1"))
    master = await (await client.get(f"/{TRACK}/master.m3u8?sid=g1")).text()
    start, cap = peak["aac-64k"], peak["aac-128k"]
    assert f'#EXT-X-SESSION-DATA:DATA-ID="com.cadenza.start-bitrate",VALUE="{start}"' in master
    assert f'#EXT-X-SESSION-DATA:DATA-ID="com.cadenza.max-bitrate",VALUE="{cap}"' in master
    mpd = await (await client.get(f"/{TRACK}/manifest.mpd?sid=g1")).read()
    (band,) = elements(mpd, "//d:ServiceDescription/d:OperatingBandwidth")
    assert (band.get("target"), band.get("max")) == (str(start), str(cap))
    # Knowing nothing of a session, the origin hints nothing.
    unknown = await (await client.get(f"/{TRACK}/master.m3u8?sid=nobody")).text()
    assert "com.cadenza.start-bitrate" not in unknown


async def test_cmsd_etp_is_the_origins_measurement_not_the_players_mtp(
    make_decided: MakeDecided, packaged_root: Path
) -> None:
    """Two requests half a second apart, each on a connection of its own: etp is
    the first object's size over that half second; the player's mtp (90 kb/s)
    is not echoed back, and before any measurement there is no etp at all."""
    clock = Clock()
    client = await make_decided(clock)
    query = "?" + SLOW.format(sid="e1")
    first = await client.get(PLAIN_SEGMENT + query, headers={"Connection": "close"})
    assert first.headers["CMSD-Dynamic"].startswith('"cadenza";mb=')
    assert "etp=" not in first.headers["CMSD-Dynamic"]
    clock.now_s += 0.5
    second = await client.get(PLAIN_SEGMENT + query, headers={"Connection": "close"})
    size_bytes = (packaged_root / TRACK / "aac-128k" / "seg-00001.m4s").stat().st_size
    etp = int(second.headers["CMSD-Dynamic"].split("etp=")[1].split(";")[0])
    assert etp == round(8 * size_bytes / 0.5 / 1000)
    assert etp != 90


# -- through the CDN edge (deploy/nginx/edge.conf.template, a real nginx) ---


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _edge_get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def cdn(packaged_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(edge URL, origin URL): cadenza serve behind the nginx edge we ship."""
    prefix = tmp_path_factory.mktemp("nginx-decided")
    with cadenza_serve(str(packaged_root), prefix) as origin:
        edge = NginxEdge(prefix / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            yield edge.url, origin.url
        finally:
            edge.stop()


def test_the_edge_passes_group_requests_with_their_query_and_caches_the_rungs(
    cdn: tuple[str, str],
) -> None:
    edge, origin = cdn
    # A cached shared master must not answer ?abr=origin.
    _edge_get(f"{edge}/{TRACK}/master.m3u8")
    assert _edge_get(f"{edge}/{TRACK}/master.m3u8")[1]["X-Cache-Status"] == "HIT"
    status, headers, body = _edge_get(f"{edge}/{TRACK}/master.m3u8?abr=origin&sid=n1")
    assert status == 200
    assert b"group-aac/playlist.m3u8?sid=n1" in body
    assert headers["Cache-Control"].startswith("private")
    # nginx's proxy_cache does not store a private answer: each viewer a session.
    fresh = [_edge_get(f"{edge}/{TRACK}/master.m3u8?abr=origin") for _ in range(2)]
    assert [answer[1]["X-Cache-Status"] for answer in fresh] == ["MISS", "MISS"]
    assert fresh[0][2] != fresh[1][2]
    playlist = _edge_get(f"{edge}/{TRACK}/group-aac/playlist.m3u8?sid=n1")
    assert b"seg-00001.m4s?sid=n1" in playlist[2]
    locations = []
    for n in (1, 2, 1):  # the same URL twice: two decisions, never a cached answer
        status, headers, _ = _edge_get(
            edge + segment(n, "n1", "CMCD=bl%3D20000%2Cmtp%3D5000"), **{"CMCD-Session": 'cid="c"'}
        )
        assert status == 302
        assert headers["Cache-Control"] == "private, no-store"
        assert headers["X-Cache-Status"] == "BYPASS"
        locations.append(headers["Location"])
    with urllib.request.urlopen(f"{origin}/v1/sessions/n1", timeout=5) as response:
        report = json.loads(response.read())
    assert [d["segment"] for d in report["decisions"]] == [1, 2, 1]
    assert (report["last_mtp_kbps"], report["cid"]) == (5000, "c")  # the query and the headers
    target = urljoin(edge + GROUP_SEGMENT.format(n=1), locations[-1])
    rung_of("http://origin" + target.removeprefix(edge))  # a rung, never a group URL
    statuses = [_edge_get(target)[1]["X-Cache-Status"] for _ in range(2)]
    assert statuses[-1] == "HIT"  # the redirect's target is the shared, cached object


async def test_replicas_sharing_redis_continue_one_sessions_decisions(
    make_decided: MakeDecided, redis_server: RedisServer
) -> None:
    """The controller's state travels in the session record: a replica picks up
    where the other left off (its window of samples, its previous rung)."""
    clock = Clock()
    first = await make_decided(clock, redis_url=redis_server.url)
    second = await make_decided(clock, redis_url=redis_server.url)
    clock.now_s += 1.0
    assert await decide(first, 1, "shared", FAST) == "aac-320k"
    clock.now_s += 1.0
    assert await decide(second, 2, "shared", FAST) == "aac-320k"
    data = await report(first, "shared")
    assert [(d["segment"], d["reason"]) for d in data["decisions"]] == [(1, "mpc"), (2, "mpc")]
    assert data["requests"] == 2


# -- the session's pure parts (abr/session.py, abr/session_origin.py) ---------------


def test_a_session_keeps_its_latest_decisions() -> None:
    ladder = (64_000, 128_000)
    state = SessionState("k", 0.0, 0.0)
    for number in range(1, DECISIONS_KEPT + 11):
        decision, controller = decide_rung(
            ladder, state.controller, Signals(), float(number), segment_duration_s=4.0
        )
        fields = decision_fields(
            state,
            decision,
            controller,
            segment=number,
            rung="aac-64k",
            now_s=float(number),
            object_bytes=1000,
            segment_duration_s=4.0,
            delivery_rate_bps=None,
            direct_peer=None,
            delivery=Delivery.DIRECT if number % 2 else Delivery.REDIRECT,
        )
        state = evolve(state, **fields)
    assert len(state.decisions) == DECISIONS_KEPT
    assert state.decisions[0].segment == 11
    assert [d.delivery for d in state.decisions[:2]] == [Delivery.DIRECT, Delivery.REDIRECT]
    first = state.to_dict()["decisions"][0]  # type: ignore[index]
    assert sorted(first) == ["bitrate_bps", "delivery", "reason", "rung", "segment"]
    assert (first["segment"], first["delivery"]) == (11, "direct")
    assert state.controller is not None and state.controller.requests == DECISIONS_KEPT + 10
