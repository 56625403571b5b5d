"""Adaptive delivery of origin-decided segments (``abr_delivery = adaptive``,
cadenza.abr.delivery): the origin serves the chosen rung's bytes while the session
starts and while its link is slower than the ladder needs, and redirects to the
rung's cacheable URL otherwise; the delivery is counted, and both transports
answer alike.  The clock is injected: no sleeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cadenza.origin.settings import AbrDelivery, Settings, load_settings
from tests.origin.conftest import TRACK
from tests.origin.test_origin_decided import (
    FAST,
    Clock,
    KeepAlive,
    MakeDecided,
    _metric,
    _threaded,
    make_decided,
    report,
    rung_of,
    segment,
)

# A slow link as CMCD (CTA-5004): 90 kb/s measured, 2 s of buffer, playing.
SLOW = "CMCD=bl%3D2000%2Cmtp%3D90"


__all__ = ["make_decided"]  # the fixture, imported to be used here


def _bytes_of(root: Path, rung: str, n: int) -> bytes:
    return (root / TRACK / rung / f"seg-{n:05d}.m4s").read_bytes()


async def test_adaptive_serves_the_start_redirects_a_fast_link_and_serves_a_slow_one(
    make_decided: MakeDecided, packaged_root: Path
) -> None:
    clock = Clock()
    client = await make_decided(clock, abr_delivery=AbrDelivery.ADAPTIVE)
    # The start: nothing measured, the lowest rung, its bytes served.
    start = await client.get(segment(1, "a1"), allow_redirects=False)
    assert start.status == 200
    assert start.headers["Cache-Control"] == "private"
    assert await start.read() == _bytes_of(packaged_root, "aac-64k", 1)
    # (The fixture track has three segments: the session asks for them again, from the
    # first, since near the track's end a climb from the lowest rung is not worth its
    # switch.)  A link with room above the ladder: redirected to the top rung's public URL.
    answers = []
    for n in (1, 2, 3):
        clock.now_s += 1.0
        answers.append(await client.get(segment(n, "a1", FAST), allow_redirects=False))
    assert [a.status for a in answers] == [302, 302, 302]
    assert [rung_of(a.headers["Location"]) for a in answers] == ["aac-320k"] * 3
    # The link slows down (one 90 kb/s sample pulls the robust estimate below the
    # ladder's top): the chosen rung's bytes again.
    clock.now_s += 20.0
    slow = await client.get(segment(2, "a1", SLOW), allow_redirects=False)
    assert slow.status == 200
    assert slow.headers["Cache-Control"] == "private"
    decisions = (await report(client, "a1"))["decisions"]
    assert await slow.read() == _bytes_of(packaged_root, decisions[-1]["rung"], 2)
    assert len(decisions) == 5
    # Each decision records how it was answered (GET /v1/sessions/{sid}).
    assert [d["delivery"] for d in decisions] == ["direct", *["redirect"] * 3, "direct"]
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_abr_deliveries_total{delivery="redirect"} 3.0' in metrics
    assert 'cadenza_abr_deliveries_total{delivery="direct"} 2.0' in metrics


async def test_adaptive_is_the_default_delivery(
    make_decided: MakeDecided, packaged_root: Path
) -> None:
    """With no ``abr_delivery`` set, a session's start is served (its bytes, ``private``)
    and a fast link is redirected to the rung's cacheable URL."""
    clock = Clock()
    client = await make_decided(clock, abr_delivery=Settings(root="/srv").abr_delivery)
    start = await client.get(segment(1, "def1"), allow_redirects=False)
    assert (start.status, start.headers["Cache-Control"]) == (200, "private")
    assert await start.read() == _bytes_of(packaged_root, "aac-64k", 1)
    clock.now_s += 1.0
    fast = await client.get(segment(1, "def1", FAST), allow_redirects=False)
    assert fast.status == 302
    assert rung_of(fast.headers["Location"]) == "aac-320k"


async def test_redirect_and_direct_modes_count_their_delivery(
    make_decided: MakeDecided,
) -> None:
    for mode, served in ((AbrDelivery.REDIRECT, "redirect"), (AbrDelivery.DIRECT, "direct")):
        client = await make_decided(Clock(), abr_delivery=mode)
        assert (await client.get(segment(1, "m1"), allow_redirects=False)).status in (200, 302)
        metrics = await (await client.get("/metrics")).text()
        assert f'cadenza_abr_deliveries_total{{delivery="{served}"}} 1.0' in metrics
        other = "direct" if served == "redirect" else "redirect"
        assert f'cadenza_abr_deliveries_total{{delivery="{other}"}} 0.0' in metrics


def test_adaptive_is_a_setting() -> None:
    settings = load_settings({"root": "/srv"}, {"CADENZA_ABR_DELIVERY": "Adaptive"})
    assert settings.abr_delivery is AbrDelivery.ADAPTIVE


def test_both_transports_deliver_adaptively_alike(packaged_root: Path) -> None:
    clock = Clock()
    fast = _threaded(packaged_root, clock, abr_delivery=AbrDelivery.ADAPTIVE)
    plain = _threaded(packaged_root, clock, abr_delivery=AbrDelivery.ADAPTIVE, fast_path=False)
    requests = [segment(1, "t1"), *(segment(n, "t1", FAST) for n in (2, 3, 1))]
    answers: dict[str, list[Any]] = {"fast": [], "plain": []}
    connections = {"fast": KeepAlive(fast.port), "plain": KeepAlive(plain.port)}
    try:
        for target in requests:
            clock.now_s += 1.0
            for name, connection in connections.items():
                status, headers, body = connection.ask(target)
                kept = [(n, v) for n, v in headers if n != "Date"]
                answers[name].append((status, kept, body))
        assert answers["fast"] == answers["plain"]
        statuses = [status for status, _, _ in answers["fast"]]
        assert statuses == [200, 302, 302, 302]
        assert answers["fast"][0][2] == _bytes_of(packaged_root, "aac-64k", 1)
        counted = _metric(fast, "cadenza_abr_deliveries_total")
        assert 'cadenza_abr_deliveries_total{delivery="direct"} 1.0' in counted
        assert 'cadenza_abr_deliveries_total{delivery="redirect"} 3.0' in counted
    finally:
        for connection in connections.values():
            connection.close()
        fast.stop()
        plain.stop()


async def test_a_direct_choice_too_large_to_hold_is_redirected_and_counted_so(
    make_decided: MakeDecided, packaged_root: Path
) -> None:
    """A segment larger than the hot cache holds is never served from memory: the
    decision falls back to the rung's own (streaming) URL, and is counted as the
    redirect it became, not as direct."""
    # Room for the manifests and the model, not for the segment the origin picks.
    held = max(f.stat().st_size for f in (packaged_root / TRACK).iterdir() if f.is_file())
    assert len(_bytes_of(packaged_root, "aac-64k", 1)) > held
    client = await make_decided(
        Clock(), abr_delivery=AbrDelivery.DIRECT, cache_max_object_bytes=held
    )
    answer = await client.get(segment(1, "big1"), allow_redirects=False)
    assert answer.status == 302
    assert rung_of(answer.headers["Location"]) == "aac-64k"
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_abr_deliveries_total{delivery="redirect"} 1.0' in metrics
    assert 'cadenza_abr_deliveries_total{delivery="direct"} 0.0' in metrics
