"""Key delivery at the origin: the W3C ClearKey licence endpoint and the AES-128 key
endpoint, behind signed tokens or the admin token, never cached, rate-limited and
counted (origin/licences.py)."""

from __future__ import annotations

import base64
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cadenza.manifests.encryption import key_id_b64url
from cadenza.manifests.hls import render_media_playlist
from cadenza.manifests.jsonio import presentation_to_json
from cadenza.manifests.model import Encryption, EncryptionScheme, Presentation
from cadenza.origin.app import create_app
from cadenza.origin.auth import sign_path
from cadenza.origin.errors import BadLicenceRequestError
from cadenza.origin.licences import parse_licence_request
from cadenza.origin.settings import Settings
from cadenza.store.keys import default_key_store_location, open_key_store
from tests.manifests.test_rendering import make_presentation

KEK = bytes(range(32))
SIGNING = "a-signing-key-of-32-characters!!"
ADMIN = "an-admin-token-of-enough-length"
TRACK_KID = "00112233445566778899aabbccddeeff"
AES_KID = "ffeeddccbbaa99887766554433221100"
OTHER_KID = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"
UNKNOWN_KID = "1234567890abcdef1234567890abcdef"
KEYS = {TRACK_KID: secrets.token_bytes(16), AES_KID: secrets.token_bytes(16)}
KEYS[OTHER_KID] = secrets.token_bytes(16)


def _encrypted(track_id: str, cbcs_kid: str, aes_kid: str | None) -> Presentation:
    base = make_presentation()
    renditions = tuple(
        dataclasses.replace(
            r,
            encryption=Encryption(EncryptionScheme.AES_128, aes_kid)
            if aes_kid is not None and r.id == "aac-64k"
            else Encryption(EncryptionScheme.CBCS, cbcs_kid),
        )
        for r in base.renditions
    )
    return dataclasses.replace(base, track_id=track_id, renditions=renditions, groups=())


@pytest.fixture
async def keyed_root(tmp_path: Path) -> Path:
    """Two tracks' models under ROOT and their keys wrapped in ROOT-keys."""
    root = tmp_path / "root"
    for track, cbcs, aes in (("track", TRACK_KID, AES_KID), ("other", OTHER_KID, None)):
        (root / track).mkdir(parents=True)
        (root / track / "presentation.json").write_text(
            presentation_to_json(_encrypted(track, cbcs, aes))
        )
    store = open_key_store(default_key_store_location(str(root)), KEK)
    for key_id, key in KEYS.items():
        await store.put(key_id, key)
    await store.close()
    return root


Client = TestClient[Any, Any]


@pytest.fixture
async def client_for(keyed_root: Path) -> AsyncIterator[Callable[..., Any]]:
    clients: list[Client] = []

    async def make(**overrides: Any) -> Client:
        settings = Settings(
            **{
                "root": str(keyed_root),
                "key_encryption_key": KEK.hex(),
                "signing_keys": (SIGNING,),
                "admin_token": ADMIN,
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


def _token(scope: str = "/track/", expires_s: int | None = None) -> str:
    expires = int(time.time()) + 600 if expires_s is None else expires_s
    return sign_path(SIGNING.encode(), scope, expires)


def _forged() -> str:
    return sign_path(b"an-attacker-s-own-key-123", "/track/", int(time.time()) + 600)


def _request(*kids: str) -> dict[str, object]:
    return {"kids": [key_id_b64url(k) for k in kids], "type": "temporary"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_track_token_gets_a_clearkey_licence_for_its_key(client_for: Any) -> None:
    client = await client_for()
    response = await client.post(f"/t/{_token()}/v1/licence/clearkey", json=_request(TRACK_KID))
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store, private"
    body = await response.json()
    assert body == {
        "keys": [{"kty": "oct", "kid": key_id_b64url(TRACK_KID), "k": _b64url(KEYS[TRACK_KID])}],
        "type": "temporary",
    }


async def test_a_track_token_gets_its_aes_key_as_raw_bytes(client_for: Any) -> None:
    client = await client_for()
    response = await client.get(f"/t/{_token()}/v1/keys/{AES_KID}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Cache-Control"] == "no-store, private"
    assert await response.read() == KEYS[AES_KID]


async def test_a_track_token_does_not_grant_another_tracks_key(client_for: Any) -> None:
    client = await client_for()
    for path, kwargs in (
        (f"/t/{_token()}/v1/licence/clearkey", {"json": _request(TRACK_KID, OTHER_KID)}),
        (f"/t/{_token('/other/')}/v1/keys/{AES_KID}", {}),
    ):
        method = client.post if "licence" in path else client.get
        response = await method(path, **kwargs)
        assert response.status == 404
        assert (await response.json())["error"] == "unknown_key"


async def test_the_admin_token_and_a_root_scope_grant_every_key(client_for: Any) -> None:
    client = await client_for()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    response = await client.post(
        "/v1/licence/clearkey", json=_request(TRACK_KID, OTHER_KID), headers=admin
    )
    assert response.status == 200
    assert len((await response.json())["keys"]) == 2
    response = await client.get(f"/t/{_token('/')}/v1/keys/{OTHER_KID}")
    assert await response.read() == KEYS[OTHER_KID]
    response = await client.get(f"/v1/keys/{UNKNOWN_KID}", headers=admin)
    assert response.status == 404
    assert response.headers["Cache-Control"] == "no-store, private"


@pytest.mark.parametrize("kid", [TRACK_KID, UNKNOWN_KID])
async def test_no_or_bad_token_is_403_whatever_the_key_id(client_for: Any, kid: str) -> None:
    client = await client_for()
    cases = [
        ("/v1/licence/clearkey", {}, "token_missing"),
        (f"/t/{_forged()}/v1/licence/clearkey", {}, "bad_signature"),
        (f"/t/{_token(expires_s=1)}/v1/licence/clearkey", {}, "token_expired"),
        (
            "/v1/licence/clearkey",
            {"Authorization": "Bearer not-the-admin-token"},
            "bad_admin_token",
        ),
    ]
    for path, headers, reason in cases:
        response = await client.post(path, json=_request(kid), headers=headers)
        assert response.status == 403, path
        assert (await response.json())["error"] == reason
        assert response.headers["Cache-Control"] == "no-store, private"
    response = await client.get(f"/v1/keys/{kid}")
    assert response.status == 403
    # Not even a malformed body tells an unauthenticated caller anything.
    response = await client.post("/v1/licence/clearkey", data=b"not json")
    assert response.status == 403


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"kids": []}',
        b'{"kids": ["short"]}',
        b'{"kids": [1]}',
        b'{"kids": ["ABEiM0RVZneImaq7zN3u_w"], "type": "persistent-license"}',
    ],
)
async def test_a_malformed_licence_request_is_400(client_for: Any, body: bytes) -> None:
    client = await client_for()
    response = await client.post(f"/t/{_token()}/v1/licence/clearkey", data=body)
    assert response.status == 400
    assert (await response.json())["error"] == "bad_licence_request"
    response = await client.get(f"/t/{_token()}/v1/keys/NOT-HEX")
    assert response.status == 400


async def test_issuance_and_refusals_are_counted_and_keys_never_logged(
    client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await client_for()
    await client.post(f"/t/{_token()}/v1/licence/clearkey", json=_request(TRACK_KID))
    await client.get(f"/t/{_token()}/v1/keys/{AES_KID}")
    await client.get(f"/v1/keys/{AES_KID}")
    text = await (await client.get("/metrics")).text()
    assert 'cadenza_licences_issued_total{kind="clearkey"} 1.0' in text
    assert 'cadenza_licences_issued_total{kind="aes-128"} 1.0' in text
    assert 'cadenza_licences_refused_total{reason="token_missing"} 1.0' in text
    assert TRACK_KID in caplog.text  # the issuance is logged, by key id
    for key in KEYS.values():
        assert key.hex() not in caplog.text and _b64url(key) not in caplog.text


async def test_licence_requests_are_rate_limited_per_address(client_for: Any) -> None:
    client = await client_for(licence_rate_per_s=0.001, ip_burst=2)
    statuses = [(await client.get(f"/t/{_token()}/v1/keys/{AES_KID}")).status for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_without_a_kek_an_authorised_caller_is_told_how_to_set_it(client_for: Any) -> None:
    client = await client_for(key_encryption_key=None)
    response = await client.get(f"/t/{_token()}/v1/keys/{AES_KID}")
    assert response.status == 503
    assert "CADENZA_KEY_ENCRYPTION_KEY" in (await response.json())["detail"]


async def test_an_open_origin_delivers_keys_without_a_token(client_for: Any) -> None:
    client = await client_for(signing_keys=(), admin_token=None)
    response = await client.post("/v1/licence/clearkey", json=_request(TRACK_KID))
    assert response.status == 200


async def test_an_edge_may_pass_signed_key_requests_to_the_origin(client_for: Any) -> None:
    """``/v1/auth`` allows ``/t/<token>/v1/licence/...`` and ``/v1/keys/...``: the
    track's token does not cover those paths, the origin checks it against the key ids."""
    client = await client_for()
    for path in (f"/t/{_token()}/v1/licence/clearkey", f"/t/{_forged()}/v1/keys/{AES_KID}"):
        response = await client.get("/v1/auth", headers={"X-Original-URI": path})
        assert response.status == 200, path
        assert response.headers["Cache-Control"] == "no-store"
    response = await client.get(
        "/v1/auth", headers={"X-Original-URI": f"/t/{_forged()}/track/master.m3u8"}
    )
    assert response.status == 403


def test_the_playlists_key_url_keeps_the_signed_prefix() -> None:
    """The static media playlist's AES-128 URI resolves under the playlist's token."""
    rendition = _encrypted("track", TRACK_KID, AES_KID).rendition("aac-64k")
    uri = next(
        line.split('URI="')[1].split('"')[0]
        for line in render_media_playlist(rendition).splitlines()
        if line.startswith("#EXT-X-KEY")
    )
    token = _token()
    signed = urljoin(f"http://origin/t/{token}/track/aac-64k/playlist.m3u8", uri)
    assert signed == f"http://origin/t/{token}/v1/keys/{AES_KID}"
    assert urljoin("http://origin/track/aac-64k/playlist.m3u8", uri).endswith(f"/v1/keys/{AES_KID}")


def test_parse_licence_request_takes_the_eme_format() -> None:
    body = b'{"kids": ["%s"], "type": "temporary"}' % key_id_b64url(TRACK_KID).encode()
    assert parse_licence_request(body) == [TRACK_KID]
    with pytest.raises(BadLicenceRequestError):
        parse_licence_request(b'{"kids": ["' + b"A" * 22 + b'="]}')
