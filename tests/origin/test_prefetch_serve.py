"""Prefetch in ``cadenza serve`` (a real server process): a session's requests
answered by the fast transport feed the planner, and a two-track queue starts
its second track with its first segment hot."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.origin.originproc import cadenza_serve
from tests.origin.prefetch_helpers import RUNG, catalogue, cmcd, segment
from tests.origin.waiting import wait_for

__all__ = ["catalogue"]  # fixture


def _issued(port: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cadenza_prefetch_issued_total"
    )


def test_the_fast_transport_feeds_prefetch(catalogue: Path, tmp_path: Path) -> None:
    with cadenza_serve(str(catalogue), tmp_path) as origin:
        api = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
        body = json.dumps({"tracks": ["a", "b"]})
        api.request("POST", "/v1/sessions/s1/queue", body=body)
        assert api.getresponse().status == 200
        api.close()
        player = http.client.HTTPConnection("127.0.0.1", origin.port, timeout=10)
        query = f"?CMCD={cmcd('s1')}"
        for path in (f"/a/{RUNG}/init.mp4", segment("a", 1), segment("a", 2)):
            player.request("GET", path + query)
            response = player.getresponse()
            response.read()
            assert response.status == 200
        wait_for(lambda: _issued(origin.port) >= 5, "b is prepared")
        player.request("GET", segment("a", 3) + query)
        response = player.getresponse()
        response.read()
        assert response.getheader("Link") == "</b/manifest.mpd>; rel=preload; as=fetch"
        player.request("GET", segment("b", 1) + query)
        response = player.getresponse()
        response.read()
        assert response.getheader("X-Cadenza-Cache") == "hit"
        player.close()
