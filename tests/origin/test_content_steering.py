"""Content steering at the origin: the ranking (a pure function, table-driven),
the player's query arguments, the pathway health rules, the steering endpoint
and the steered manifests through a real app, and health transitions against
two tiny HTTP servers on loopback standing in for CDNs."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cadenza.manifests.hls import parse_attributes, parse_master
from cadenza.origin.auth import signed_url
from cadenza.origin.content_steering import steering_config
from cadenza.origin.errors import SettingsError
from cadenza.origin.metrics import Metrics, create_metrics
from cadenza.origin.pathway_health import PathwayMonitor, Target
from cadenza.origin.pathways import PathwayCloneSetting, PathwaySetting, clone_base_url
from cadenza.origin.settings import load_settings
from cadenza.origin.steering_policy import Health, parse_steering_query, rank_pathways
from tests.origin.conftest import TRACK, MakeClient, free_port

UP, DOWN = Health(True), Health(False)


def _p(pathway_id: str, weight: int = 1) -> PathwaySetting:
    return PathwaySetting(pathway_id, f"http://{pathway_id}.example", weight)


# -- ranking ------------------------------------------------------------------------

RANKING = [
    # (case, pathways, health, current, throughput, expected)
    ("configured order breaks ties", [_p("a"), _p("b")], {}, None, {}, ["a", "b"]),
    ("weights order", [_p("a", 1), _p("b", 3), _p("c", 2)], {}, None, {}, ["b", "c", "a"]),
    ("unhealthy last", [_p("a", 5), _p("b")], {"a": DOWN}, None, {}, ["b", "a"]),
    (
        "unhealthy keep weight order among themselves",
        [_p("a", 1), _p("b", 2), _p("c")],
        {"a": DOWN, "b": DOWN},
        None,
        {},
        ["c", "b", "a"],
    ),
    ("current kept in a tie", [_p("a"), _p("b")], {}, "b", {}, ["b", "a"]),
    ("current loses to a heavier pathway", [_p("a", 2), _p("b")], {}, "b", {}, ["a", "b"]),
    ("unhealthy current moves away", [_p("a"), _p("b")], {"b": DOWN}, "b", {}, ["a", "b"]),
    (
        "throughput breaks a tie between others",
        [_p("a"), _p("b"), _p("c")],
        {},
        "a",
        {"b": 1_000, "c": 9_000},
        ["a", "c", "b"],
    ),
    ("throughput does not beat weight", [_p("a", 2), _p("b")], {}, None, {"b": 10**9}, ["a", "b"]),
    ("unknown health counts as up", [_p("a"), _p("b")], {"b": UP}, None, {}, ["a", "b"]),
    (
        "all down: still a full list",
        [_p("a"), _p("b")],
        {"a": DOWN, "b": DOWN},
        "b",
        {},
        ["b", "a"],
    ),
    (
        "recovering pathway waits out the hold",
        [_p("a", 2), _p("b")],
        {"a": Health(True, recovered_at_s=95.0)},
        "b",
        {},
        ["b", "a"],
    ),
    (
        "recovered pathway preferred again after the hold",
        [_p("a", 2), _p("b")],
        {"a": Health(True, recovered_at_s=80.0)},
        "b",
        {},
        ["a", "b"],
    ),
    (
        "recovering pathway is the player's own: no hold",
        [_p("a", 2), _p("b")],
        {"a": Health(True, recovered_at_s=99.0)},
        "a",
        {},
        ["a", "b"],
    ),
    (
        "recovering beats down",
        [_p("a"), _p("b", 2)],
        {"a": Health(True, recovered_at_s=99.0), "b": DOWN},
        None,
        {},
        ["a", "b"],
    ),
    ("unknown current ignored", [_p("a"), _p("b")], {}, "zz", {}, ["a", "b"]),
]


@pytest.mark.parametrize(
    ("pathways", "health", "current", "throughput", "expected"),
    [case[1:] for case in RANKING],
    ids=[case[0] for case in RANKING],
)
def test_rank_pathways(
    pathways: list[PathwaySetting],
    health: dict[str, Health],
    current: str | None,
    throughput: dict[str, int],
    expected: list[str],
) -> None:
    ranked = rank_pathways(pathways, health, current, throughput, 100.0, recover_hold_s=10.0)
    assert ranked == expected


def test_rank_pathways_is_stable_for_a_player_that_reports_its_pathway() -> None:
    """Equal weights: each player keeps the pathway it is on, every time it asks."""
    pathways = [_p("a"), _p("b")]
    for current in ("a", "b"):
        for _ in range(3):
            ranked = rank_pathways(pathways, {}, current, {}, 0.0)
            assert ranked[0] == current


# -- the player's query arguments ---------------------------------------------------

KNOWN = {"cdn-a", "cdn-b"}
QUERIES = [
    # (case, query, protocol, current, throughput, malformed)
    ("nothing", {}, "unknown", None, {}, ()),
    (
        "hls.js",
        {"_HLS_pathway": "cdn-b", "_HLS_throughput": "5140000"},
        "hls",
        "cdn-b",
        {"cdn-b": 5_140_000},
        (),
    ),
    ("hls.js before a pathway", {"_HLS_pathway": ".", "_HLS_throughput": "0"}, "hls", None, {}, ()),
    ("hls unknown pathway", {"_HLS_pathway": "cdn-z"}, "hls", None, {}, ("pathway",)),
    (
        "hls bad throughput",
        {"_HLS_pathway": "cdn-a", "_HLS_throughput": "fast"},
        "hls",
        "cdn-a",
        {},
        ("throughput",),
    ),
    ("hls negative throughput", {"_HLS_throughput": "-5"}, "hls", None, {}, ("throughput",)),
    ("hls absurd throughput", {"_HLS_throughput": "9" * 20}, "hls", None, {}, ("throughput",)),
    ("hls unicode digits", {"_HLS_throughput": "١٢٣"}, "hls", None, {}, ("throughput",)),
    (
        "dash.js one location",
        {"_DASH_pathway": '"cdn-a"', "_DASH_throughput": "812000"},
        "dash",
        "cdn-a",
        {"cdn-a": 812_000},
        (),
    ),
    (
        "dash.js two locations, last is current",
        {"_DASH_pathway": '"cdn-a,cdn-b"', "_DASH_throughput": "812000,1500000"},
        "dash",
        "cdn-b",
        {"cdn-a": 812_000, "cdn-b": 1_500_000},
        (),
    ),
    (
        "dash.js location without samples",
        {"_DASH_pathway": '"cdn-a,cdn-b"', "_DASH_throughput": ",700000"},
        "dash",
        "cdn-b",
        {"cdn-b": 700_000},
        (),
    ),
    (
        "dash unquoted",
        {"_DASH_pathway": "cdn-b"},
        "dash",
        "cdn-b",
        {},
        (),
    ),
    (
        "dash unknown and extra values",
        {"_DASH_pathway": '"cdn-q,cdn-a"', "_DASH_throughput": "1,2,3,x"},
        "dash",
        "cdn-a",
        {"cdn-a": 2},
        ("pathway", "throughput", "throughput"),
    ),
    ("dash overlong", {"_DASH_pathway": "a" * 5000}, "dash", None, {}, ("pathway",)),
    ("protocol hint only", {}, "dash", None, {}, ()),
]


@pytest.mark.parametrize(
    ("query", "protocol", "current", "throughput", "malformed"),
    [case[1:] for case in QUERIES],
    ids=[case[0] for case in QUERIES],
)
def test_parse_steering_query(
    query: dict[str, str],
    protocol: str,
    current: str | None,
    throughput: dict[str, int],
    malformed: tuple[str, ...],
) -> None:
    hint = "dash" if not query and protocol == "dash" else None
    parsed = parse_steering_query(query, KNOWN, protocol_hint=hint)
    assert (parsed.protocol, parsed.current, parsed.throughput_bps, parsed.malformed) == (
        protocol,
        current,
        throughput,
        malformed,
    )


# -- health rules -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gauge(metrics: Metrics, pathway: str) -> float | None:
    return metrics.registry.get_sample_value("cadenza_pathway_up", {"pathway": pathway})


def test_monitor_needs_n_failures_in_a_row_and_one_success() -> None:
    clock = FakeClock()
    metrics = create_metrics()
    monitor = PathwayMonitor(
        [Target("a", "http://a", 1), Target("b", "http://b", 1)],
        failures_to_down=3,
        metrics=metrics,
        clock=clock,
    )
    assert monitor.health() == {"a": Health(True), "b": Health(True)}
    monitor.record("a", False, "refused")
    monitor.record("a", False, "refused")
    monitor.record("a", True)  # the run of failures is broken
    monitor.record("a", False, "refused")
    monitor.record("a", False, "refused")
    assert monitor.health()["a"].up
    monitor.record("a", False, "refused")
    assert not monitor.health()["a"].up
    assert _gauge(metrics, "a") == 0
    assert _gauge(metrics, "b") == 1
    clock.now = 1005.0
    monitor.record("a", True)
    assert monitor.health()["a"] == Health(True, recovered_at_s=1005.0)
    assert _gauge(metrics, "a") == 1
    (row,) = [r for r in monitor.report() if r["id"] == "a"]
    assert row["up"] and row["probes"] == 7 and row["failures_in_a_row"] == 0


# -- settings -----------------------------------------------------------------------


def test_pathways_from_the_environment() -> None:
    settings = load_settings(
        {"root": "/srv"},
        env={"CADENZA_PATHWAYS": "cdn-a@3=https://a.example.com/, cdn-b=http://127.0.0.1:8082"},
    )
    assert settings.pathways == (
        PathwaySetting("cdn-a", "https://a.example.com", 3),
        PathwaySetting("cdn-b", "http://127.0.0.1:8082", 1),
    )


def test_pathways_and_clones_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        """
content_steering_ttl_s = 5
content_steering_default = "cdn-b"
[[pathways]]
id = "cdn-a"
base_url = "https://a.example.com"
weight = 2
[[pathways]]
id = "cdn-b"
base_url = "https://b.example.com"
[[pathway_clones]]
id = "cdn-c"
base_id = "cdn-b"
host = "c.example.com"
params = { token = "t1" }
""",
        encoding="utf-8",
    )
    settings = load_settings({"root": "/srv"}, env={}, config_file=config)
    assert [p.id for p in settings.pathways] == ["cdn-a", "cdn-b"]
    assert settings.pathway_clones == (
        PathwayCloneSetting("cdn-c", "cdn-b", "c.example.com", (("token", "t1"),), 1),
    )
    assert settings.content_steering_ttl_s == 5
    assert settings.content_steering_default == "cdn-b"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CADENZA_PATHWAYS": "cdn-a"}, "ID[@WEIGHT]=URL"),
        ({"CADENZA_PATHWAYS": "cdn a=https://a"}, "must be 1-64"),
        ({"CADENZA_PATHWAYS": "a=ftp://a"}, "http(s)"),
        ({"CADENZA_PATHWAYS": "a=https://a?x=1"}, "plain URL"),
        ({"CADENZA_PATHWAYS": "a@0=https://a"}, "weight"),
        ({"CADENZA_PATHWAYS": "a@x=https://a"}, "weight"),
        ({"CADENZA_PATHWAYS": "a=https://a,a=https://b"}, "twice"),
        ({"CADENZA_PATHWAYS": "a=https://a", "CADENZA_CONTENT_STEERING_DEFAULT": "b"}, "not a"),
        ({"CADENZA_PATHWAY_CLONES": "x"}, "TOML only"),
        ({"CADENZA_CONTENT_STEERING_URL": "steer.example.com"}, "http"),
        ({"CADENZA_CONTENT_STEERING_TTL_S": "0"}, "positive"),
        ({"CADENZA_PATHWAY_HEALTH_PATH": "healthz"}, "path"),
    ],
)
def test_bad_steering_settings_are_refused(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(fragment)):
        load_settings({"root": "/srv"}, env=env)


def test_clone_needs_a_configured_base(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[pathways]]\nid="a"\nbase_url="https://a"\n'
        '[[pathway_clones]]\nid="c"\nbase_id="zz"\nhost="c.example.com"\n',
        encoding="utf-8",
    )
    with pytest.raises(SettingsError, match="no pathway 'zz'"):
        load_settings({"root": "/srv"}, env={}, config_file=config)


def test_clone_base_url_replaces_the_host_and_keeps_port_and_path() -> None:
    assert clone_base_url("http://a.example.com:8081/cdn", "c.example.com") == (
        "http://c.example.com:8081/cdn"
    )


# -- the manifests' steering block ----------------------------------------------------


def test_steering_config_carries_the_token_it_is_given_and_parses_none() -> None:
    settings = load_settings(
        {"root": "/srv"},
        env={"CADENZA_PATHWAYS": "cdn-a=https://a.example.com,cdn-b@2=https://b.example.com/x"},
    )
    signed = steering_config(
        settings, None, "my track", "hls", origin_url="http://o:8080", token="1.AA.sig"
    )
    assert signed is not None
    assert signed.server_uri == "http://o:8080/v1/steering/my%20track?protocol=hls"
    assert [(p.id, p.base_url) for p in signed.pathways] == [
        ("cdn-a", "https://a.example.com/t/1.AA.sig"),
        ("cdn-b", "https://b.example.com/x/t/1.AA.sig"),
    ]
    assert signed.default == "cdn-b"  # the heavier pathway, for a newcomer
    plain = steering_config(settings, None, "t", "dash", origin_url="http://o", token=None)
    assert plain is not None
    assert [p.base_url for p in plain.pathways] == [
        "https://a.example.com",
        "https://b.example.com/x",
    ]
    unsteered = load_settings({"root": "/srv"}, env={})
    assert steering_config(unsteered, None, "t", "hls", origin_url="http://o", token="x") is None


# -- through the app ----------------------------------------------------------------


class TinyCdn:
    """A loopback HTTP server answering ``/healthz``: a CDN for the probes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status = 200
        self.hits = 0
        self._runner: web.AppRunner | None = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"status": "ok"}, status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def cdns() -> AsyncIterator[tuple[TinyCdn, TinyCdn]]:
    """Tests ask for this before ``make_client``: fixtures end in reverse, so the
    origin (and its probe loop) stops before the CDNs it probes, and no probe
    can be accepted by a CDN that is shutting down (an unclosed socket)."""
    pair = (TinyCdn(), TinyCdn())
    for cdn in pair:
        await cdn.start()
    yield pair
    for cdn in pair:
        await cdn.stop()


STEER = "http://steer.test:9000"


def _steering_settings(a: TinyCdn, b: TinyCdn, **overrides: Any) -> dict[str, Any]:
    return {
        "pathways": (PathwaySetting("cdn-a", a.url, 1), PathwaySetting("cdn-b", b.url, 1)),
        "content_steering_url": STEER,
        "content_steering_ttl_s": 2,
        "pathway_health_interval_s": 0.05,
        "pathway_health_timeout_s": 0.5,
        "pathway_health_failures": 2,
        "pathway_recover_hold_s": 0.0,
        **overrides,
    }


async def _eventually(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        assert time.monotonic() < deadline, f"not within {timeout_s} s"
        await asyncio.sleep(0.05)


async def _json(client: Any, url: str) -> tuple[int, dict[str, str], Any]:
    response = await client.get(url)
    return response.status, dict(response.headers), await response.json()


async def test_steering_manifest_shape_and_headers(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    client = await make_client(**_steering_settings(*cdns))
    status, headers, body = await _json(client, f"/v1/steering/{TRACK}?protocol=hls")
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert body == {
        "VERSION": 1,
        "TTL": 2,
        "RELOAD-URI": f"/v1/steering/{TRACK}?protocol=hls",
        "PATHWAY-PRIORITY": ["cdn-a", "cdn-b"],
    }


async def test_steering_honours_the_players_pathway_and_drops_its_args_from_reload(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    client = await make_client(**_steering_settings(*cdns))
    _, _, hls = await _json(
        client, f"/v1/steering/{TRACK}?protocol=hls&_HLS_pathway=cdn-b&_HLS_throughput=900000"
    )
    assert hls["PATHWAY-PRIORITY"] == ["cdn-b", "cdn-a"]
    assert hls["RELOAD-URI"] == f"/v1/steering/{TRACK}?protocol=hls"
    _, _, dash = await _json(
        client,
        f"/v1/steering/{TRACK}?protocol=dash&_DASH_pathway=%22cdn-a,cdn-b%22"
        "&_DASH_throughput=100,200",
    )
    assert dash["PATHWAY-PRIORITY"] == ["cdn-b", "cdn-a"]
    assert dash["RELOAD-URI"] == f"/v1/steering/{TRACK}?protocol=dash"
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_steering_responses_total{first="cdn-b",protocol="hls"} 1.0' in metrics
    assert 'cadenza_steering_responses_total{first="cdn-b",protocol="dash"} 1.0' in metrics


async def test_malformed_player_args_are_ignored_and_counted(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    client = await make_client(**_steering_settings(*cdns))
    for query in (
        "_HLS_pathway=nope&_HLS_throughput=fast",
        "_HLS_pathway=%00%ff&_HLS_throughput=-1",
        "_DASH_pathway=" + "x" * 3000,
        "_DASH_pathway=%22cdn-a%22&_DASH_throughput=1,2,3",
    ):
        status, _, body = await _json(client, f"/v1/steering/{TRACK}?{query}")
        assert status == 200, query
        assert body["PATHWAY-PRIORITY"] == ["cdn-a", "cdn-b"]
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_steering_malformed_args_total{arg="pathway"} 3.0' in metrics
    assert 'cadenza_steering_malformed_args_total{arg="throughput"} 4.0' in metrics


async def test_steering_refuses_bad_track_ids_and_is_404_without_pathways(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    client = await make_client(**_steering_settings(*cdns))
    assert (await client.get("/v1/steering/..%2Fetc")).status in (400, 404)
    assert (await client.get("/v1/steering/.hidden")).status == 400
    plain = await make_client()
    response = await plain.get(f"/v1/steering/{TRACK}")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    assert (await plain.get("/v1/pathways")).status == 404


async def test_clones_are_listed_and_ranked(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    clone = PathwayCloneSetting("cdn-c", "cdn-b", "localhost", (("token", "t"),), 5)
    client = await make_client(**_steering_settings(*cdns, pathway_clones=(clone,)))
    _, _, body = await _json(client, f"/v1/steering/{TRACK}")
    assert body["PATHWAY-CLONES"] == [
        {
            "BASE-ID": "cdn-b",
            "ID": "cdn-c",
            "URI-REPLACEMENT": {"HOST": "localhost", "PARAMS": {"token": "t"}},
        }
    ]
    assert body["PATHWAY-PRIORITY"] == ["cdn-c", "cdn-a", "cdn-b"]
    _, _, report = await _json(client, "/v1/pathways")
    (row,) = [r for r in report["pathways"] if r["id"] == "cdn-c"]
    assert row["clone_of"] == "cdn-b"
    assert row["base_url"] == f"http://localhost:{cdns[1].port}"


async def test_manifests_name_the_pathways_and_the_steering_server(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    a, b = cdns
    client = await make_client(**_steering_settings(a, b))
    response = await client.get(f"/{TRACK}/master.m3u8")
    assert response.status == 200
    text = await response.text()
    tag = next(line for line in text.splitlines() if line.startswith("#EXT-X-CONTENT-STEERING"))
    assert parse_attributes(tag.split(":", 1)[1]) == {
        "SERVER-URI": f"{STEER}/v1/steering/{TRACK}?protocol=hls",
        "PATHWAY-ID": "cdn-a",
    }
    variants = parse_master(text)
    assert {v.pathway_id for v in variants} == {"cdn-a", "cdn-b"}
    assert all(v.uri.startswith((f"{a.url}/{TRACK}/", f"{b.url}/{TRACK}/")) for v in variants)
    mpd = await (await client.get(f"/{TRACK}/manifest.mpd?codec=aac")).text()
    assert f'<BaseURL serviceLocation="cdn-b">{b.url}/{TRACK}/</BaseURL>' in mpd
    assert (
        f'<ContentSteering defaultServiceLocation="cdn-a" queryBeforeStart="false">'
        f"{STEER}/v1/steering/{TRACK}?protocol=dash</ContentSteering>"
    ) in mpd.replace("&amp;", "&")


async def test_without_pathways_manifests_are_the_packaged_files(
    make_client: MakeClient, packaged_root: Path
) -> None:
    client = await make_client()
    for name in ("master.m3u8", "manifest.mpd"):
        body = await (await client.get(f"/{TRACK}/{name}")).read()
        assert body == (packaged_root / TRACK / name).read_bytes()
        assert b"STEERING" not in body and b"ContentSteering" not in body


async def test_steering_server_defaults_to_the_requested_host(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    client = await make_client(**_steering_settings(*cdns, content_steering_url=None))
    text = await (await client.get(f"/{TRACK}/master.m3u8")).text()
    assert f'SERVER-URI="http://{client.host}:{client.port}/v1/steering/{TRACK}' in text


async def test_a_host_derived_steering_manifest_is_private(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    """A shared cache keys on the path, not on Host: a manifest whose steering
    server was named after a (forgeable) Host header must not be cached for
    everyone (RFC 9111 section 5.2.2.7, ``private``)."""
    client = await make_client(**_steering_settings(*cdns, content_steering_url=None))
    response = await client.get(f"/{TRACK}/master.m3u8", headers={"Host": "evil.example"})
    text = await response.text()
    assert 'SERVER-URI="http://evil.example/v1/steering/' in text
    assert response.headers["Cache-Control"].startswith("private")


async def test_a_configured_steering_url_keeps_manifests_public(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    client = await make_client(**_steering_settings(*cdns))
    response = await client.get(f"/{TRACK}/master.m3u8", headers={"Host": "evil.example"})
    assert "evil.example" not in await response.text()
    assert response.headers["Cache-Control"].startswith("public")


async def test_a_cdn_that_stops_answering_goes_last_and_comes_back(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    a, b = cdns
    client = await make_client(**_steering_settings(a, b))

    async def priority(query: str = "") -> list[str]:
        _, _, body = await _json(client, f"/v1/steering/{TRACK}{query}")
        return list(body["PATHWAY-PRIORITY"])

    async def a_is(up: bool) -> bool:
        _, _, report = await _json(client, "/v1/pathways")
        return any(r["id"] == "cdn-a" and r["up"] is up and r["probes"] for r in report["pathways"])

    await _eventually(lambda: a_is(True))
    assert await priority("?_HLS_pathway=cdn-a") == ["cdn-a", "cdn-b"]
    await a.stop()  # connection refused from now on
    await _eventually(lambda: a_is(False))
    assert await priority("?_HLS_pathway=cdn-a") == ["cdn-b", "cdn-a"]
    _, _, report = await _json(client, "/v1/pathways")
    assert report["priority"] == ["cdn-b", "cdn-a"]
    (row,) = [r for r in report["pathways"] if r["id"] == "cdn-a"]
    assert row["failures_in_a_row"] >= 2 and row["last_error"]
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_pathway_up{pathway="cdn-a"} 0.0' in metrics
    assert 'cadenza_pathway_up{pathway="cdn-b"} 1.0' in metrics
    # New players start on B: the manifests' default pathway follows health.
    master = await (await client.get(f"/{TRACK}/master.m3u8")).text()
    assert 'PATHWAY-ID="cdn-b"' in master.split("\n#EXT-X-STREAM-INF", 1)[0]

    await a.start()  # one good probe brings it back
    await _eventually(lambda: a_is(True))
    assert await priority() == ["cdn-a", "cdn-b"]
    metrics = await (await client.get("/metrics")).text()
    assert 'cadenza_pathway_up{pathway="cdn-a"} 1.0' in metrics


async def test_server_errors_count_as_failed_probes(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    a, b = cdns
    client = await make_client(**_steering_settings(a, b))
    b.status = 503

    async def b_down() -> bool:
        _, _, report = await _json(client, "/v1/pathways")
        return any(r["id"] == "cdn-b" and not r["up"] for r in report["pathways"])

    await _eventually(b_down)
    _, _, body = await _json(client, f"/v1/steering/{TRACK}?_HLS_pathway=cdn-b")
    assert body["PATHWAY-PRIORITY"] == ["cdn-a", "cdn-b"]
    _, _, report = await _json(client, "/v1/pathways")
    (row,) = [r for r in report["pathways"] if r["id"] == "cdn-b"]
    assert row["last_error"] == "HTTP 503"


async def test_a_signed_manifest_steers_to_signed_pathway_urls(
    cdns: tuple[TinyCdn, TinyCdn], make_client: MakeClient
) -> None:
    """With signed URLs, the pathway URIs carry the manifest's token (relative URIs
    would inherit it), and the manifest is private since it names one viewer's token."""
    a, b = cdns
    key = "k" * 32
    client = await make_client(signing_keys=(key,), **_steering_settings(a, b))
    url = signed_url(key.encode(), f"/{TRACK}/", f"/{TRACK}/master.m3u8", int(time.time()) + 60)
    token_prefix = url.removesuffix(f"/{TRACK}/master.m3u8")
    response = await client.get(url)
    assert response.status == 200
    assert response.headers["Cache-Control"].startswith("private")
    variants = parse_master(await response.text())
    assert {v.uri.split(f"/{TRACK}/")[0] for v in variants} == {
        f"{a.url}{token_prefix}",
        f"{b.url}{token_prefix}",
    }
    mpd = await (await client.get(url.replace("master.m3u8", "manifest.mpd"))).text()
    assert f'<BaseURL serviceLocation="cdn-a">{a.url}{token_prefix}/{TRACK}/</BaseURL>' in mpd
