"""Encrypted playback in real players (headless Chromium, EME with W3C ClearKey):
hls.js, dash.js and Shaka play ``cbcs`` AAC, Opus and FLAC through the origin and
through the nginx edge, with signed URLs and licences from ``/v1/licence/clearkey``;
hls.js plays AES-128 with its key from ``/v1/keys/``; a licence asked without a token,
or a wrong key, fails in the player while the origin answers 403 with a reason.

dash.js and Shaka take the licence URL from the MPD (``dashif:Laurl``, absolute, built
by the origin from the request, under the MPD's own ``/t/<token>/``), so their pages
configure none; one dash.js case has the page set it, which dash.js prefers (an
unsigned URL set by the page then fails).  hls.js reads no licence URL from the
playlist: its page configures one.

Each test is one Chromium run that plays its cases in turn in one page load
(``sequence`` in tests/e2e/page/harness.js), so the suite stays short.

Shaka plays the MPD: its HLS parser (5.2.12) reads a ClearKey ``EXT-X-KEY`` only as
``KEYFORMAT="identity"`` with a URI that answers the raw key, which hls.js 1.7.4 takes
for TS ``SAMPLE-AES`` (and prefers over any other key format), so one media playlist
cannot serve both; the playlists carry hls.js's ``org.w3.clearkey`` form.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from cadenza.manifests.ladder import PRESETS
from cadenza.origin.auth import sign_path
from cadenza.packager.keys import make_options
from cadenza.packager.track import PackageOptions, package_track
from cadenza.store.keys import KEK_ENV
from samples.make_sample import synthesize, write_audio
from tests.e2e.conftest import ROOT, Drive, free_port, merge_results
from tests.nginx_edge import NginxEdge
from tests.origin.originproc import cadenza_serve

pytestmark = pytest.mark.e2e
TRACK_S = 12.0
PLAY_S = 3.0
CBCS = "enc-cbcs"
AES = "enc-aes"
SIGNING = "e2e-signing-key-" + secrets.token_hex(8)
KEK = secrets.token_hex(32)
CODECS = ("aac", "opus", "flac")
RESULTS: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class Served:
    origin: str
    edge: str
    origin_process: Any

    def token(self, track: str) -> str:
        return sign_path(SIGNING.encode(), f"/{track}/", int(time.time()) + 3600)

    def track_url(self, base: str, track: str, name: str) -> str:
        return f"{base}/t/{self.token(track)}/{track}/{name}"

    def licence_url(self, base: str, track: str, *, signed: bool = True) -> str:
        prefix = f"/t/{self.token(track)}" if signed else ""
        return f"{base}{prefix}/v1/licence/clearkey"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two tracks, one ``cbcs``, one ``aes-128``, served with signed URLs by ``cadenza
    serve`` (which finds the keys in ``<root>-keys``) and by an nginx edge before it."""
    folder = tmp_path_factory.mktemp("encrypted")
    out = folder / "out"
    out.mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv(KEK_ENV, KEK)  # the packager stores each key wrapped with it
        for track, scheme in ((CBCS, "cbcs"), (AES, "aes-128")):
            source = folder / f"{track}.flac"
            write_audio(source, synthesize(TRACK_S, 44100, 2), 44100)
            encryption = make_options(scheme, out=str(out), env={KEK_ENV: KEK})
            options = PackageOptions(ladder=PRESETS["music"], encryption=encryption)
            result = package_track(source, out, options)
            assert result.status == "packaged", result.error
    with cadenza_serve(
        str(out), folder, cwd=ROOT, signing_keys=SIGNING, key_encryption_key=KEK
    ) as origin:
        edge = NginxEdge(folder / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            yield Served(origin.url, edge.url, origin)
        finally:
            edge.stop()
    merge_results(RESULTS)


def _case(
    served: Served, player: str, codec: str, base: str, *, page_licence: bool = False
) -> dict[str, Any]:
    """One ``cbcs`` case: hls.js's EME ClearKey configuration with the signed licence
    URL; dash.js and Shaka none (the MPD names it), unless ``page_licence``."""
    licence = served.licence_url(base, CBCS)
    name = f"manifest.mpd?codec={codec}" if player != "hls" else f"master.m3u8?codec={codec}"
    case: dict[str, Any] = {
        "player": player,
        "src": served.track_url(base, CBCS, name),
        "play_s": PLAY_S,
        "timeout_s": 30,
        "name": f"{player} cbcs {codec} {'edge' if base == served.edge else 'origin'}",
    }
    if player == "hls":
        case["hls"] = {
            "emeEnabled": True,
            "drmSystems": {"org.w3.clearkey": {"licenseUrl": licence}},
        }
    elif page_licence and player == "dash":
        case["dash_protection"] = {"org.w3.clearkey": {"serverURL": licence}}
        case["name"] += " page licence"
    elif page_licence:
        case["shaka"] = {"drm": {"servers": {"org.w3.clearkey": licence}}}
        case["name"] += " page licence"
    return case


def _results(result: dict[str, Any]) -> list[dict[str, Any]]:
    final = result["final"]
    assert final is not None and final.get("sequence_done"), result.get("console")
    results: list[dict[str, Any]] = final["sequence_results"]
    for item in results:
        RESULTS[item["name"]] = {k: item[k] for k in ("current_time", "rms_max", "fatal")}
    return results


def _assert_played(item: dict[str, Any], console: Sequence[str] = ()) -> None:
    assert item["fatal"] is None, (item["name"], item["errors"], console[-12:])
    assert item["current_time"] >= PLAY_S, item
    assert item["rms_max"] > 0.01, f"{item['name']}: silence ({item['rms_max']})"


@pytest.mark.parametrize("player", ["hls", "dash", "shaka"])
def test_eme_clearkey_plays_every_codec_through_origin_and_edge(
    drive: Drive, served: Served, player: str
) -> None:
    cases = [_case(served, player, codec, served.origin) for codec in CODECS]
    cases.append(_case(served, player, "aac", served.edge))
    if player == "dash":  # the page's licence URL, preferred over the MPD's
        cases.append(_case(served, player, "opus", served.edge, page_licence=True))
    result = drive(sequence=cases, timeout_s=150)
    results = _results(result)
    assert [r["name"] for r in results] == [c["name"] for c in cases]
    for item in results:
        _assert_played(item, result["console"])


def _kid_b64url(track_url: str) -> str:
    with urllib.request.urlopen(track_url, timeout=10) as response:
        doc = json.loads(response.read())
    key_id = doc["renditions"][0]["encryption"]["key_id"]
    return base64.urlsafe_b64encode(bytes.fromhex(key_id)).rstrip(b"=").decode()


def test_aes128_in_hlsjs_and_refusals_fail_in_the_player(drive: Drive, served: Served) -> None:
    """AES-128 (keys from /v1/keys/ under the playlist's token) through the origin and
    the edge; then a licence asked without a token, and a wrong key: both fail."""
    kid = _kid_b64url(served.track_url(served.origin, CBCS, "presentation.json"))
    wrong = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
    aes = [
        {
            "player": "hls",
            "src": served.track_url(base, AES, f"master.m3u8?codec={codec}"),
            "play_s": PLAY_S,
            "timeout_s": 30,
            "name": f"hls aes-128 {codec} {where}",
        }
        for codec, base, where in (
            ("aac", served.origin, "origin"),
            ("flac", served.origin, "origin"),
            ("opus", served.edge, "edge"),
        )
    ]
    unsigned = _case(served, "hls", "aac", served.origin)
    unsigned["hls"]["drmSystems"]["org.w3.clearkey"]["licenseUrl"] = served.licence_url(
        served.origin, CBCS, signed=False
    )
    unsigned["name"] = "hls cbcs licence without token"
    # dash.js prefers the page's licence URL to the MPD's: an unsigned one fails.
    page_unsigned = _case(served, "dash", "flac", served.origin, page_licence=True)
    page_unsigned["dash_protection"]["org.w3.clearkey"]["serverURL"] = served.licence_url(
        served.origin, CBCS, signed=False
    )
    page_unsigned["name"] = "dash cbcs page licence without token"
    wrong_key = _case(served, "dash", "aac", served.origin)
    wrong_key["dash_protection"] = {"org.w3.clearkey": {"clearkeys": {kid: wrong}}}
    wrong_key["name"] = "dash cbcs wrong key"
    result = drive(sequence=[*aes, unsigned, page_unsigned, wrong_key], timeout_s=180)
    results = {r["name"]: r for r in _results(result)}
    for case in aes:
        _assert_played(results[case["name"]])
    failing = (
        "hls cbcs licence without token",
        "dash cbcs page licence without token",
        "dash cbcs wrong key",
    )
    for name in failing:
        failed = results[name]
        assert failed["fatal"] is not None, failed  # a licence error, or a decode error
        assert failed["current_time"] < 0.5 and failed["rms_max"] < 0.01, failed
    # The origin refused the unsigned licence request with a reason, and says so.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            urllib.request.Request(
                served.licence_url(served.origin, CBCS, signed=False),
                data=json.dumps({"kids": [kid], "type": "temporary"}).encode(),
                headers={"Content-Type": "application/json"},
            ),
            timeout=10,
        )
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["error"] == "token_missing"
    with urllib.request.urlopen(f"{served.origin}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    refusals = [
        line
        for line in metrics.splitlines()
        if line.startswith('cadenza_licences_refused_total{reason="token_missing"}')
    ]
    assert refusals and float(refusals[0].split()[-1]) >= 3, refusals
