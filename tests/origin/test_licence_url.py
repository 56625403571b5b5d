"""The licence URL in an encrypted track's MPD (``dashif:Laurl``): absolute, built from
the request (Host, the scheme the client used, behind trusted proxies the one they
forward), under the same ``/t/<token>/`` prefix as the MPD; such an MPD is this
viewer's (``private``, its own ETag), while a clear track's MPD stays the stored bytes,
shared-cacheable.  On the fast transport an encrypted track's MPD is handed to aiohttp
(origin/core/answer.py, origin/licences.py)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from cadenza.manifests.dash import render_mpd
from cadenza.manifests.encryption import DASHIF_NS, key_id_b64url
from cadenza.manifests.jsonio import presentation_to_json
from cadenza.manifests.model import Encryption, EncryptionScheme, Presentation
from cadenza.origin.app import create_app
from cadenza.origin.auth import sign_path
from cadenza.origin.settings import Settings
from cadenza.store.keys import default_key_store_location, open_key_store
from tests.conftest import free_port
from tests.fetch import fetch
from tests.manifests.test_rendering import make_presentation
from tests.nginx_edge import NginxEdge
from tests.origin.rawhttp import ThreadedOrigin
from tests.origin.test_fastpath import Connection, _get, _handovers

KEK = bytes(range(32))
SIGNING = "a-signing-key-of-32-characters!!"
KID = "00112233445566778899aabbccddeeff"
KEY = bytes(range(16, 32))
LAURL = f"{{{DASHIF_NS}}}Laurl"
Client = TestClient[Any, Any]


def _encrypted() -> Presentation:
    base = make_presentation()
    renditions = tuple(
        dataclasses.replace(r, encryption=Encryption(EncryptionScheme.CBCS, KID))
        for r in base.renditions
    )
    return dataclasses.replace(base, track_id="locked", renditions=renditions, groups=())


@pytest.fixture
async def root(tmp_path: Path) -> Path:
    """An encrypted track (``locked``) and a clear one (``clear``), each with the MPD
    the packager stores (no licence URL), and the key wrapped in ROOT-keys."""
    root = tmp_path / "root"
    for track, presentation in (("locked", _encrypted()), ("clear", make_presentation())):
        presentation = dataclasses.replace(presentation, track_id=track)
        (root / track).mkdir(parents=True)
        (root / track / "presentation.json").write_text(presentation_to_json(presentation))
        (root / track / "manifest.mpd").write_text(render_mpd(presentation))
    store = open_key_store(default_key_store_location(str(root)), KEK)
    await store.put(KID, KEY)
    await store.close()
    return root


@pytest.fixture
async def client_for(root: Path) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def make(**overrides: Any) -> Client:
        settings = Settings(
            **{
                "root": str(root),
                "key_encryption_key": KEK.hex(),
                "signing_keys": (SIGNING,),
                **overrides,
            }
        )
        client: Client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def _token(scope: str = "/locked/", expires_s: int = 600) -> str:
    return sign_path(SIGNING.encode(), scope, int(time.time()) + expires_s)


def _laurls(body: bytes) -> list[str]:
    return [str(e.text) for e in etree.fromstring(body).iter(LAURL)]


async def test_a_signed_mpd_names_a_signed_absolute_licence_url_that_works(
    client_for: Any,
) -> None:
    client = await client_for()
    token = _token()
    response = await client.get(f"/t/{token}/locked/manifest.mpd")
    assert response.status == 200, await response.text()
    body = await response.read()
    host = f"127.0.0.1:{client.port}"
    licence = f"http://{host}/t/{token}/v1/licence/clearkey"
    assert set(_laurls(body)) == {licence}
    assert response.headers["Cache-Control"].startswith("private")
    # The URL as it stands, as a player posts to it: the key of this track.
    answer = await client.post(
        licence.removeprefix(f"http://{host}"),
        json={"kids": [key_id_b64url(KID)], "type": "temporary"},
    )
    assert answer.status == 200, await answer.text()
    keys = (await answer.json())["keys"]
    assert [k["kid"] for k in keys] == [key_id_b64url(KID)]


async def test_a_filtered_or_session_mpd_names_it_too(client_for: Any) -> None:
    client = await client_for()
    token = _token()
    for query in ("?codec=aac", "?sid=viewer-1", "?codec=aac&sid=viewer-2"):
        response = await client.get(f"/t/{token}/locked/manifest.mpd{query}")
        assert response.status == 200, (query, await response.text())
        assert _laurls(await response.read()), query
        assert response.headers["Cache-Control"].startswith("private"), query


async def test_each_viewer_gets_its_own_etag_and_validators_still_work(client_for: Any) -> None:
    client = await client_for()
    first, second = _token(), _token(expires_s=900)
    one = await client.get(f"/t/{first}/locked/manifest.mpd")
    two = await client.get(f"/t/{second}/locked/manifest.mpd")
    assert await one.read() != await two.read()
    etag = one.headers["ETag"]
    assert etag != two.headers["ETag"]  # RFC 9110 8.8.3: another representation
    again = await client.get(f"/t/{first}/locked/manifest.mpd", headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    other = await client.get(f"/t/{second}/locked/manifest.mpd", headers={"If-None-Match": etag})
    assert other.status == 200
    assert _laurls(await other.read()) == _laurls(await two.read())


async def test_a_clear_tracks_mpd_stays_the_stored_shared_bytes(
    client_for: Any, root: Path
) -> None:
    client = await client_for()
    response = await client.get(f"/t/{_token('/clear/')}/clear/manifest.mpd")
    assert response.status == 200
    assert await response.read() == (root / "clear" / "manifest.mpd").read_bytes()
    assert response.headers["Cache-Control"].startswith("public")


async def test_the_scheme_is_the_forwarded_one_only_from_a_trusted_proxy(
    client_for: Any,
) -> None:
    token = _token()
    path = f"/t/{token}/locked/manifest.mpd"
    trusting = await client_for(trusted_proxies=("127.0.0.1/32",))
    distrusting = await client_for()
    forwarded = {"Forwarded": "for=203.0.113.9;proto=https"}
    cases = [
        (trusting, {"X-Forwarded-Proto": "https"}, "https"),
        (trusting, forwarded, "https"),
        (trusting, {"Forwarded": "for=203.0.113.9;proto=gopher"}, "http"),
        (trusting, {}, "http"),
        (distrusting, {"X-Forwarded-Proto": "https"}, "http"),
        (distrusting, forwarded, "http"),
    ]
    for client, headers, scheme in cases:
        response = await client.get(path, headers={**headers, "Host": "cdn.example:8443"})
        assert response.status == 200, await response.text()
        expected = f"{scheme}://cdn.example:8443/t/{token}/v1/licence/clearkey"
        assert _laurls(await response.read())[0] == expected, headers


async def test_a_forwarded_list_is_read_at_the_proxy_the_client_reached(
    client_for: Any,
) -> None:
    """A client's own ``Forwarded`` element (left of the trusted proxies') is not believed:
    the proto is the one the first untrusted hop's proxy wrote."""
    client = await client_for(trusted_proxies=("127.0.0.1/32", "10.0.0.0/8"))
    header = "for=198.51.100.1;proto=http, for=203.0.113.9;proto=https, for=10.1.2.3;proto=http"
    response = await client.get(f"/t/{_token()}/locked/manifest.mpd", headers={"Forwarded": header})
    assert _laurls(await response.read())[0].startswith("https://")


@pytest.mark.parametrize("host", ['evil"><x', "a/b", "user@host", ""])
async def test_an_invalid_host_is_400_for_an_encrypted_mpd_only(client_for: Any, host: str) -> None:
    client = await client_for()
    locked = await client.get(f"/t/{_token()}/locked/manifest.mpd", headers={"Host": host})
    assert locked.status == 400, await locked.text()
    clear = await client.get(f"/t/{_token('/clear/')}/clear/manifest.mpd", headers={"Host": host})
    assert clear.status == 200


@pytest.fixture
def fast(root: Path) -> Iterator[ThreadedOrigin]:
    settings = Settings(root=str(root), key_encryption_key=KEK.hex())
    origin = ThreadedOrigin(settings).start()
    try:
        yield origin
    finally:
        origin.stop()


def _fetch(origin: ThreadedOrigin, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = Connection(origin.port)
    try:
        connection.send(_get(path))
        status, headers, body = connection.answer()
    finally:
        connection.close()
    return status, dict(headers), body


def test_the_fast_transport_hands_an_encrypted_mpd_over_every_time(
    fast: ThreadedOrigin, root: Path
) -> None:
    """Never a hot copy of the stored MPD (without the URL): each request, with a query
    or without, is rendered by aiohttp for its Host; a clear MPD stays the fast path's."""
    before = _handovers(fast, "load_failed")
    for path in ("/locked/manifest.mpd", "/locked/manifest.mpd", "/locked/manifest.mpd?sid=s1"):
        status, headers, body = _fetch(fast, path)
        assert status == 200, body
        assert set(_laurls(body)) == {"http://127.0.0.1/v1/licence/clearkey"}, path
        assert headers["Cache-Control"].startswith("private")
        assert headers["X-Cadenza-Cache"] in ("rendered", "steered")
    assert _handovers(fast, "load_failed") == before + 3
    stored = (root / "clear" / "manifest.mpd").read_bytes()
    for _ in range(2):
        status, headers, body = _fetch(fast, "/clear/manifest.mpd")
        assert (status, body) == (200, stored)
        assert headers["Cache-Control"].startswith("public")
    assert _handovers(fast, "load_failed") == before + 3
    assert re.search(rb"Laurl", stored) is None


def test_through_the_edge_each_viewer_gets_its_own_mpd_never_cached(
    root: Path, tmp_path: Path
) -> None:
    """The nginx edge (deploy/nginx) passes the client's Host with its port and the
    scheme in ``Forwarded``; it never stores the private MPD, so two viewers' tokens
    get their own licence URLs; a clear MPD is still cached and shared."""
    settings = Settings(
        root=str(root),
        key_encryption_key=KEK.hex(),
        signing_keys=(SIGNING,),
        trusted_proxies=("127.0.0.1/32",),
    )
    origin = ThreadedOrigin(settings).start()
    edge = NginxEdge(tmp_path / "edge", f"127.0.0.1:{origin.port}", free_port())
    edge.start()
    try:
        for token in (_token(), _token(expires_s=900), _token()):
            status, headers, body = fetch(f"{edge.url}/t/{token}/locked/manifest.mpd")
            assert status == 200, body
            assert set(_laurls(body)) == {f"{edge.url}/t/{token}/v1/licence/clearkey"}
            assert headers["Cache-Control"].startswith("private")
            assert headers["X-Cache-Status"] != "HIT"
        clear = [fetch(f"{edge.url}/t/{_token('/clear/')}/clear/manifest.mpd") for _ in range(2)]
        assert clear[0][2] == clear[1][2] == (root / "clear" / "manifest.mpd").read_bytes()
        assert clear[1][1]["X-Cache-Status"] == "HIT"
    finally:
        edge.stop()
        origin.stop()
