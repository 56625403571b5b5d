"""1,000 concurrent blocking playlist reloads on one ``cadenza serve`` worker
(issue 20: "one origin worker holds 1,000 concurrent blocking playlist
requests, with RSS reported").

Every request asks for the next part (``_HLS_msn``/``_HLS_part``) of a live track
the test writes; once the origin's ``cadenza_live_blocked_requests`` gauge shows
all 1,000 waiting (a condition, polled), the test writes the part and every
request must be answered ``200`` with a playlist listing it.  Checked: the
count waiting, every answer, the outcome counter.  RSS before, while holding
them, and after is printed and written to ``live-load.json`` in the test's tmp
folder; it is not asserted (the machine is shared).  The clients and the wait
are :mod:`tests.origin.live_load`'s, which ``make bench``'s ``live`` suite shares."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from tests.origin.live_load import ANSWERED_COUNTER, Answer, ClientFleet, metric, wait_held
from tests.origin.live_track import LiveTrackWriter
from tests.origin.originproc import OriginProcess, cadenza_serve, raise_open_files_limit

CLIENTS = 1000
BLOCKING = "/radio/aac-64k/playlist.m3u8?_HLS_msn=1&_HLS_part=1"


async def _hold(origin: OriginProcess, release: LiveTrackWriter) -> tuple[list[Answer], int]:
    """The answers of CLIENTS blocking requests released by one part, and the
    server's RSS (KiB) while it held them all."""
    async with ClientFleet(origin.url, CLIENTS) as fleet:
        asked = fleet.ask(BLOCKING)
        await wait_held(origin.url, CLIENTS)
        rss_holding = origin.rss_kib()
        release.add_part()
        return await asked, rss_holding


def test_one_worker_holds_a_thousand_blocking_reloads(tmp_path: Path) -> None:
    assert raise_open_files_limit() > CLIENTS + 100
    # 2 s parts, 8 s segments: three target durations (24 s) to open 1,000 connections.
    writer = LiveTrackWriter(tmp_path / "root", part_target_us=2_000_000)
    writer.add_part()
    with cadenza_serve(str(writer.root), tmp_path, live_poll_s=0.05) as origin:
        # Warm: the watch exists and every code path ran once.
        with urllib.request.urlopen(f"{origin.url}/radio/aac-64k/playlist.m3u8") as warm:
            assert warm.status == 200
        rss_before = origin.rss_kib()
        answers, rss_holding = asyncio.run(_hold(origin, writer))
        rss_after = origin.rss_kib()
        assert [a.status for a in answers] == [200] * CLIENTS
        assert all(b'URI="seg-00001.p1.m4s"' in a.body for a in answers)
        answered = metric(origin.url, ANSWERED_COUNTER)
        assert answered == CLIENTS
    figures = {
        "clients": CLIENTS,
        "rss_before_kib": rss_before,
        "rss_holding_kib": rss_holding,
        "rss_after_kib": rss_after,
        "kib_per_blocked_request": round((rss_holding - rss_before) / CLIENTS, 2),
    }
    print(f"live blocking load: {figures}")
    (tmp_path / "live-load.json").write_text(json.dumps(figures, indent=2))
