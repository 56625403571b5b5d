"""Client addresses behind trusted proxies (``trusted_proxies``): the rule, the
per-address limit on the aiohttp transport, and the real nginx edge we ship in
front of a real origin, on both transports.

Loopback is all of 127.0.0.0/8 on Linux, so a "viewer" here connects from
127.0.1.2 (its network key is ``net:127.0.1.0/24``) while the edge reaches the
origin from 127.0.0.1 (``net:127.0.0.0/24``)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cadenza.origin.errors import SettingsError
from cadenza.origin.proxies import TrustedProxies, client_address, forwarded_for, parse_networks
from cadenza.origin.settings import load_settings
from tests.fetch import fetch
from tests.nginx_edge import NginxEdge
from tests.origin.conftest import TRACK, free_port
from tests.origin.keepalive import keepalive_get
from tests.origin.originproc import OriginProcess, cadenza_serve

VIEWER = "127.0.1.2"
VIEWER_KEY = "net:127.0.1.0/24"
EDGE_KEY = "net:127.0.0.0/24"
FORGED = "203.0.113.66"
WAIT_S = 30.0  # the bound of a wait for a log line (never a measured figure)

EDGE = TrustedProxies.of(["10.0.0.0/8", "2001:db8:e::/48"])


# -- the rule (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "xff", "forwarded", "client"),
    [
        # An untrusted peer's fields are never read.
        ("198.51.100.1", FORGED, None, "198.51.100.1"),
        ("198.51.100.1", None, f"for={FORGED}", "198.51.100.1"),
        # A trusted peer without fields is the client.
        ("10.0.0.5", None, None, "10.0.0.5"),
        # Walked from the right past trusted hops; a client's own entries left of it.
        ("10.0.0.5", f"{FORGED}, 198.51.100.7", None, "198.51.100.7"),
        ("10.0.0.5", f"{FORGED}, 198.51.100.7, 10.1.2.3", None, "198.51.100.7"),
        # All trusted: the left-most.
        ("10.0.0.5", "10.9.9.9, 10.1.2.3", None, "10.9.9.9"),
        # Garbage stops the walk at the last trusted hop.
        ("10.0.0.5", f"{FORGED}, not-an-address", None, "10.0.0.5"),
        ("10.0.0.5", f"{FORGED}, unknown, 10.1.1.1", None, "10.1.1.1"),
        # Forwarded (RFC 7239): quoted IPv6 with a port, IPv4 with a port, other pairs.
        ("10.0.0.5", None, 'for="[2001:db8::7]:4711";proto=https', "2001:db8::7"),
        ("10.0.0.5", None, f"for={FORGED}, for=198.51.100.9:80;by=10.0.0.5", "198.51.100.9"),
        ("10.0.0.5", None, "for=_hidden", "10.0.0.5"),
        # X-Forwarded-For wins over Forwarded.
        ("10.0.0.5", "198.51.100.7", f"for={FORGED}", "198.51.100.7"),
        # A dual-stack listener's IPv4-mapped peer is its IPv4 address.
        ("::ffff:10.0.0.5", "198.51.100.7", None, "198.51.100.7"),
        ("2001:db8:e::1", "2001:db8::99", None, "2001:db8::99"),
    ],
)
def test_the_client_address(peer: str, xff: str | None, forwarded: str | None, client: str) -> None:
    assert client_address(peer, xff, forwarded, EDGE) == client


def test_nothing_trusted_is_the_peer() -> None:
    assert TrustedProxies.of([]) is None
    assert client_address("10.0.0.5", FORGED, None, None) == "10.0.0.5"


def test_forwarded_elements_without_for_are_kept_as_blanks() -> None:
    assert forwarded_for('for=1.2.3.4;proto=http, proto=https, For="[::1]"') == [
        "1.2.3.4",
        "",
        '"[::1]"',
    ]


def test_the_setting_is_checked_and_canonical(tmp_path: Path) -> None:
    env = {"CADENZA_TRUSTED_PROXIES": "10.0.0.1/8, 192.0.2.7 ,2001:db8::/32"}
    settings = load_settings({"root": str(tmp_path)}, env=env)
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")
    with pytest.raises(SettingsError, match="not an address or CIDR"):
        parse_networks("10.0.0.0/8,edge.example")
    config = tmp_path / "origin.toml"
    config.write_text('trusted_proxies = ["10.0.0.0/8"]\n', encoding="utf-8")
    assert load_settings({"root": str(tmp_path)}, env={}, config_file=config).trusted_proxies == (
        "10.0.0.0/8",
    )


# -- per-address limits (aiohttp transport, in process) --------------------------------


async def _statuses(client: Any, *xffs: str) -> list[int]:
    statuses = []
    for xff in xffs:
        response = await client.get("/v1/tracks", headers={"X-Forwarded-For": xff})
        statuses.append(response.status)
    return statuses


async def test_the_per_address_limit_is_the_clients_behind_a_trusted_proxy(
    make_client: Any,
) -> None:
    client = await make_client(trusted_proxies=("127.0.0.1/32",), ip_rate_per_s=0.001, ip_burst=1)
    assert await _statuses(client, "198.51.100.1", "198.51.100.1", "198.51.100.2") == [
        200,
        429,
        200,
    ]


async def test_the_per_address_limit_ignores_an_untrusted_peers_fields(
    make_client: Any,
) -> None:
    client = await make_client(ip_rate_per_s=0.001, ip_burst=1)
    assert await _statuses(client, "198.51.100.1", "198.51.100.2") == [200, 429]


# -- the real edge, and the origin without it -------------------------------------------


@dataclass
class Chain:
    origin: OriginProcess
    edge: NginxEdge
    transport: str  # the one that answers a session's manifest


@pytest.fixture(scope="module", params=["fast", "aiohttp"])
def chain(
    request: pytest.FixtureRequest, packaged_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    """An origin that trusts the edge (127.0.0.1) behind the shipped edge; the
    fast transport on or off."""
    prefix = tmp_path_factory.mktemp("proxies")
    with cadenza_serve(
        str(packaged_root),
        prefix,
        trusted_proxies="127.0.0.1/32",
        fast_path=str(request.param == "fast").lower(),
        log_format="json",
    ) as origin:
        edge = NginxEdge(prefix / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            yield Chain(origin, edge, request.param)
        finally:
            edge.stop()


def _session(origin: OriginProcess, sid: str) -> dict[str, Any]:
    status, _, body = fetch(f"{origin.url}/v1/sessions/{sid}")
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


def _access_line(origin: OriginProcess, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        for text in origin.log.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                line = json.loads(text)
                if line["logger"] == "cadenza.access" and line["path"] == path:
                    return dict(line)
        assert time.monotonic() < deadline, origin.log_tail()
        time.sleep(0.02)


def test_through_the_edge_the_session_has_the_viewers_network(chain: Chain) -> None:
    sid = f"edge-{chain.origin.port}"
    path = f"/{TRACK}/master.m3u8?CMCD=sid%3D%22{sid}%22%2Cot%3Dm"
    reply = keepalive_get(
        chain.edge.port,
        path,
        source=VIEWER,
        headers={"X-Forwarded-For": FORGED, "Forwarded": f"for={FORGED}"},
    )
    assert reply.status == 200
    assert _session(chain.origin, sid)["network_key"] == VIEWER_KEY
    line = _access_line(chain.origin, path)
    assert (line["client"], line["sid"]) == (VIEWER, sid)


def test_a_trusted_peers_forwarded_for_names_the_client_on_either_transport(
    chain: Chain,
) -> None:
    """What the edge sends, from the edge's address, straight to the origin: each
    upstream connection of the edge starts with an auth check (aiohttp's), so
    the fast transport is driven here directly."""
    sid = f"trusted-{chain.origin.port}"
    path = f"/{TRACK}/master.m3u8?CMCD=sid%3D%22{sid}%22%2Cot%3Dm"
    forwarded = f'for={FORGED}, for="{VIEWER}:5555";proto=http'
    reply = keepalive_get(
        chain.origin.port,
        path,
        headers={"X-Forwarded-For": f"{FORGED}, {VIEWER}", "Forwarded": forwarded},
    )
    assert reply.status == 200
    assert _session(chain.origin, sid)["network_key"] == VIEWER_KEY
    line = _access_line(chain.origin, path)
    assert (line["client"], line["transport"]) == (VIEWER, chain.transport)


def test_through_the_edge_a_beacon_keys_the_viewers_network(chain: Chain) -> None:
    sid = f"beacon-{chain.origin.port}"
    connection = http.client.HTTPConnection(
        "127.0.0.1", chain.edge.port, timeout=10, source_address=(VIEWER, 0)
    )
    try:
        body = json.dumps({"sid": sid, "bl": 9000, "ot": "a"})
        connection.request(
            "POST",
            "/v1/beacons",
            body=body,
            headers={"Content-Type": "application/json", "X-Forwarded-For": FORGED},
        )
        assert connection.getresponse().status == 204
    finally:
        connection.close()
    assert _session(chain.origin, sid)["network_key"] == VIEWER_KEY
    assert _access_line(chain.origin, "/v1/beacons")["client"] == VIEWER


@pytest.mark.parametrize("path", ["/metrics", "/v1/sessions", "/v1/sessions/x", "/v1/pathways",
                                  "/v1/ladder/recommendation", "/v1//sessions"])  # fmt: skip
def test_the_edge_refuses_internal_endpoints_from_outside(chain: Chain, path: str) -> None:
    reply = keepalive_get(chain.edge.port, path, source=VIEWER)
    assert reply.status == 403
    assert json.loads(reply.body)["error"] == "internal_only"


def test_the_edge_answers_internal_endpoints_on_its_own_host(chain: Chain) -> None:
    assert keepalive_get(chain.edge.port, "/metrics").status == 200
    assert keepalive_get(chain.edge.port, "/v1/sessions").status == 200
    # Players' endpoints stay public.
    assert keepalive_get(chain.edge.port, "/v1/tracks", source=VIEWER).status == 200


def test_straight_to_the_origin_a_viewers_forged_fields_are_ignored(chain: Chain) -> None:
    sid = f"direct-{chain.origin.port}"
    path = f"/{TRACK}/master.m3u8?CMCD=sid%3D%22{sid}%22%2Cot%3Dm"
    reply = keepalive_get(
        chain.origin.port,
        path,
        source=VIEWER,
        headers={"X-Forwarded-For": FORGED, "Forwarded": f"for={FORGED}"},
    )
    assert reply.status == 200
    assert _session(chain.origin, sid)["network_key"] == VIEWER_KEY
    line = _access_line(chain.origin, path)
    assert (line["client"], line["transport"]) == (VIEWER, chain.transport)


def test_without_trusted_proxies_the_edge_is_every_viewers_network(
    packaged_root: Path, tmp_path: Path
) -> None:
    with cadenza_serve(str(packaged_root), tmp_path) as origin:
        edge = NginxEdge(tmp_path / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            sid = "untrusted-edge"
            path = f"/{TRACK}/master.m3u8?CMCD=sid%3D%22{sid}%22%2Cot%3Dm"
            assert keepalive_get(edge.port, path, source=VIEWER).status == 200
            assert _session(origin, sid)["network_key"] == EDGE_KEY
        finally:
            edge.stop()
