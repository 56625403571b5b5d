"""The scale-out chain end to end, all on loopback: ``cadenza package --cluster`` runs a
batch on a real Dask ``LocalCluster`` (a scheduler and two worker processes) into moto's
S3 server, ``cadenza serve s3://...`` serves the bucket, an nginx edge rendered from the
shipped template (deploy/nginx/edge.conf.template) caches in front of it, and hls.js and
dash.js in headless Chromium play both tracks through the edge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cadenza.manifests.model import PRESENTATION_NAME
from tests.conftest import FAKE_AWS_ENV, MakeInput, Moto, free_port
from tests.e2e.conftest import Drive
from tests.fetch import fetch
from tests.nginx_edge import NginxEdge
from tests.origin.originproc import cadenza_serve
from tests.packager.conftest import (
    list_keys,
    local_cluster,
    s3_client,
    scheduler_task_prefixes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUCKET = "cadenza-scale"
PREFIX = "library"
TRACKS = ("scale-one", "scale-two")
TRACK_S = 12.0
PLAY_S = 4.0
PACKAGE_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 20.0
LADDER = """
name = "scale-chain"
[[rung]]
codec = "aac"
bitrate_kbps = 64
[[rung]]
codec = "aac"
bitrate_kbps = 128
[[rung]]
codec = "opus"
bitrate_kbps = 64
"""


@dataclass(frozen=True, slots=True)
class Chain:
    moto: Moto
    origin: str  # http://127.0.0.1:PORT of `cadenza serve s3://...`
    edge: NginxEdge
    package_s: float  # wall time of `cadenza package --cluster`


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Dummy credentials in this process's environment for the module: boto3 here, and
    the Dask worker processes, which inherit them when the cluster starts them."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def moto(aws_env: None) -> Iterator[Moto]:
    server = Moto()
    server.start()
    try:
        s3_client(server.url).create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def packaged(moto: Moto, make_input: MakeInput, tmp_path_factory: pytest.TempPathFactory) -> float:
    """Both tracks packaged by ``cadenza package --cluster`` into s3://BUCKET/PREFIX; the
    cluster is closed again before any browser starts. The batch's wall time."""

    folder = tmp_path_factory.mktemp("scale")
    sources = [
        make_input("flac", 44100, 2, TRACK_S, name=TRACKS[0]),
        make_input("wav", 48000, 2, TRACK_S, name=TRACKS[1]),
    ]
    ladder = folder / "ladder.toml"
    ladder.write_text(LADDER, encoding="utf-8")
    cadenza = Path(sys.executable).with_name("cadenza")
    with local_cluster() as scheduler:
        assert urlsplit(scheduler).hostname == "127.0.0.1"
        started = time.monotonic()
        done = subprocess.run(
            [
                *(str(cadenza), "package", *(str(s) for s in sources)),
                *("--out", f"s3://{BUCKET}/{PREFIX}", "--cluster", scheduler),
                *("--ladder", str(ladder), "--segment-duration", "2"),
                *("--staging", str(folder / "staging")),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PACKAGE_TIMEOUT_S,
            check=False,
            env={**os.environ, **FAKE_AWS_ENV, "AWS_ENDPOINT_URL": moto.url},
        )
        package_s = time.monotonic() - started
        assert done.returncode == 0, done.stderr[-3000:]
        # The tracks ran as tasks on the cluster, not in local processes.
        assert any(p.startswith("cadenza-package") for p in scheduler_task_prefixes(scheduler))

    keys = list_keys(moto.url, BUCKET, f"{PREFIX}/")
    for track in TRACKS:
        assert f"{PREFIX}/{track}/{PRESENTATION_NAME}" in keys, keys
        for rung in ("aac-64k", "aac-128k", "opus-64k"):
            assert f"{PREFIX}/{track}/{rung}/init.mp4" in keys, keys
    body = s3_client(moto.url).get_object(
        Bucket=BUCKET, Key=f"{PREFIX}/.cadenza/batch-report.json"
    )["Body"]
    report = json.loads(body.read())
    assert report["summary"] == {"packaged": 2, "skipped": 0, "failed": 0}
    return package_s


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def chain(moto: Moto, packaged: float, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """``cadenza serve s3://BUCKET/PREFIX`` (ready: it reaches the bucket) and an nginx
    edge from the shipped template in front of it."""
    folder = tmp_path_factory.mktemp("scale-serve")
    env = {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": moto.url}
    with cadenza_serve(f"s3://{BUCKET}/{PREFIX}", folder, env=env) as origin:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(origin.url):  # bounded: the deadline, or the process's exit
            if origin.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cadenza serve never became ready:\n{origin.log_tail()}")
            time.sleep(0.1)
        edge = NginxEdge(folder / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            yield Chain(moto, origin.url, edge, packaged)
        finally:
            edge.stop()


# hls.js plays one track, dash.js the other: both tracks the cluster packaged, both players.
CASES = [
    ("hls", TRACKS[0], "master.m3u8?codec=aac"),
    ("dash", TRACKS[1], "manifest.mpd?codec=aac"),
]


@pytest.mark.parametrize(
    ("player", "track", "manifest"), CASES, ids=[f"{p}-{t}" for p, t, _ in CASES]
)
def test_players_play_the_s3_batch_through_the_edge(
    drive: Drive, chain: Chain, player: str, track: str, manifest: str
) -> None:
    result = drive(
        player=player,
        src=f"{chain.edge.url}/{track}/{manifest}",
        play_s=PLAY_S,
        record_requests=True,
        timeout_s=30,
    )
    final = result["final"]
    assert final["fatal"] is None, final["errors"]
    assert final["current_time"] >= PLAY_S
    assert len(final["buffered"]) == 1, f"holes in the buffer: {final['buffered']}"
    # Every media request went to the edge, for this track's AAC renditions, and was served.
    media = [r for r in result["requests"] if urlsplit(r["url"]).path.endswith((".m4s", ".mp4"))]
    assert len(media) >= 3, media
    for request in media:
        parts = urlsplit(request["url"])
        assert parts.port == chain.edge.port, request
        assert parts.path.startswith(f"/{track}/aac-"), request
        assert request["status"] in (200, 206), request
    print(
        f"\n{player} {track} via the edge: startup {final['startup_s']:.2f} s, "
        f"currentTime {final['current_time']:.1f} s, {len(media)} media requests; "
        f"batch on the cluster took {chain.package_s:.1f} s"
    )


def test_the_edge_serves_the_bucket_and_caches_segments(chain: Chain) -> None:
    status, _, body = fetch(f"{chain.origin}/readyz")
    assert status == 200
    assert json.loads(body)["storage"] == "s3"
    status, _, body = fetch(f"{chain.edge.url}/v1/tracks")
    assert status == 200
    assert set(TRACKS) <= set(json.loads(body)["tracks"])

    s3 = s3_client(chain.moto.url)
    for track in TRACKS:
        path = f"{track}/aac-128k/seg-00002.m4s"
        stored = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{path}")["Body"].read()
        seen = []
        for _ in range(2):
            status, headers, body = fetch(f"{chain.edge.url}/{path}")
            assert status == 200, body[:300]
            assert body == stored  # the bytes the cluster's workers uploaded
            seen.append(headers.get("X-Cache-Status"))
        # The first GET may already hit (a player fetched it); the second always does.
        assert seen[0] in ("MISS", "HIT"), seen
        assert seen[1] == "HIT", seen
