"""Access control: signed URLs (``origin/auth.py``), the admin bearer token, and
that no secret reaches a log, a metric, a settings repr or an error.

Three levels: the pure ``sign_path``/``verify`` functions (with a hypothesis
fuzz of token strings), the app (aiohttp test client and a real server for a
raw-HTTP fuzz), and the real nginx edge of ``deploy/nginx/edge.conf.template``
in front of ``cadenza serve`` (cached objects are still refused without a
valid token).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from cadenza.cli import main as cadenza_main
from cadenza.origin.auth import (
    check_bearer,
    check_scope,
    covers,
    redact_path,
    sign_path,
    signed_url,
    split_token_path,
    verify,
)
from cadenza.origin.errors import (
    AccessDeniedError,
    AdminTokenInvalidError,
    AdminTokenMissingError,
    BadSignatureError,
    SettingsError,
    TokenExpiredError,
    TokenMalformedError,
    WrongPathError,
)
from cadenza.origin.settings import Settings, load_settings
from tests.fetch import fetch
from tests.nginx_edge import NginxEdge
from tests.origin.conftest import TRACK, MakeClient, free_port
from tests.origin.originproc import cadenza_serve
from tests.origin.rawhttp import ThreadedOrigin, get

KEY = "k3y-0f-the-s1gning-cadenza-7Qx9"  # secrets the tests look for everywhere
OLD_KEY = "0ld-k3y-0f-the-s1gning-cadenza-Zp2"
ADMIN = "adm1n-t0ken-cadenza-Jw4rT8"
KEYS = (KEY.encode(), OLD_KEY.encode())
NOW = 1_800_000_000
SCOPE = f"/{TRACK}/"
MASTER = f"/{TRACK}/master.m3u8"
MPD = f"/{TRACK}/manifest.mpd"
SEGMENT = f"/{TRACK}/aac-64k/seg-00001.m4s"


def _token(key: str = KEY, scope: str = SCOPE, expires_s: int | None = None) -> str:
    expires = int(time.time()) + 600 if expires_s is None else expires_s
    return sign_path(key.encode(), scope, expires)


def _signed(path: str, **kwargs: Any) -> str:
    return f"/t/{_token(**kwargs)}{path}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- sign and verify -------------------------------------------------------------------


def test_a_track_token_grants_every_file_of_the_track_until_it_expires() -> None:
    token = sign_path(KEY.encode(), SCOPE, NOW + 60)
    for path in (MASTER, MPD, SEGMENT, f"/{TRACK}/flac/init.mp4"):
        assert verify(KEYS, path, token, NOW) == NOW + 60
    assert verify(KEYS, MASTER, token, NOW + 60) == NOW + 60  # the last valid second


def test_an_exact_scope_grants_that_path_only() -> None:
    token = sign_path(KEY.encode(), MASTER, NOW + 60)
    verify(KEYS, MASTER, token, NOW)
    with pytest.raises(WrongPathError):
        verify(KEYS, SEGMENT, token, NOW)
    with pytest.raises(WrongPathError):
        verify(KEYS, MASTER + "x", token, NOW)


def test_root_scope_grants_everything() -> None:
    token = sign_path(KEY.encode(), "/", NOW + 60)
    verify(KEYS, "/other/aac-64k/seg-00009.m4s", token, NOW)


def test_expired_token_is_refused() -> None:
    token = sign_path(KEY.encode(), SCOPE, NOW - 1)
    with pytest.raises(TokenExpiredError):
        verify(KEYS, MASTER, token, NOW)


@pytest.mark.parametrize(
    "path",
    ["/other/master.m3u8", f"/{TRACK}2/master.m3u8", f"/{TRACK}", "/", "/other/track/x.m4s"],
)
def test_a_valid_token_for_another_path_is_a_path_swap(path: str) -> None:
    token = sign_path(KEY.encode(), SCOPE, NOW + 60)
    with pytest.raises(WrongPathError):
        verify(KEYS, path, token, NOW)


def test_forged_and_altered_tokens_are_bad_signatures() -> None:
    token = sign_path(KEY.encode(), SCOPE, NOW + 60)
    expires, scope, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    altered = [
        f"{expires}.{scope}.{flipped}",  # a guessed signature
        f"{int(expires) + 3600}.{scope}.{signature}",  # a longer life
        f"{expires}.{_b64(b'/other/')}.{signature}",  # another track
        f"{expires}.{_b64(b'/')}.{signature}",  # everything
        sign_path(b"an-attacker-s-own-key-123", SCOPE, NOW + 60),
    ]
    for forged in altered:
        with pytest.raises(BadSignatureError) as caught:
            verify(KEYS, MASTER, forged, NOW)
        assert signature not in caught.value.detail


def test_signature_is_checked_before_expiry_and_scope() -> None:
    """A forged token learns nothing: not whether it would have expired, nor its scope."""
    expired_forgery = sign_path(b"an-attacker-s-own-key-123", "/other/", NOW - 100)
    with pytest.raises(BadSignatureError):
        verify(KEYS, MASTER, expired_forgery, NOW)


def test_key_rotation_previous_keys_still_verify() -> None:
    old = sign_path(OLD_KEY.encode(), SCOPE, NOW + 60)
    verify((KEY.encode(), OLD_KEY.encode()), MASTER, old, NOW)  # rotating: both listed
    with pytest.raises(BadSignatureError):
        verify((KEY.encode(),), MASTER, old, NOW)  # the old key retired
    with pytest.raises(BadSignatureError):
        verify((), MASTER, old, NOW)


SIG = "A" * 43
MALFORMED = [
    "",
    "abc",
    "1.Lw",
    f"1.Lw.{SIG}.x",
    f"x.Lw.{SIG}",
    f"-1.Lw.{SIG}",
    f"1.Lw.{SIG[:-1]}",  # a short signature
    f"1.Lw.{SIG}A",  # a long one
    f"1.Lw.{'A' * 42}B",  # 43 characters, not a canonical encoding of 32 bytes
    f"1234567890123.Lw.{SIG}",  # 13-digit expiry
    f"1.L.{SIG}",
    f"1.Lx.{SIG}",  # "Lx" is not the canonical encoding of "/"
    f"1.{_b64(b'track/')}.{SIG}",  # a scope that is not absolute
    f"1.{_b64(b'/../etc/')}.{SIG}",
    f"1.{_b64(b'/a//b')}.{SIG}",
    f"1.{_b64(b'/.hidden/')}.{SIG}",
    f"1.{_b64(bytes([0xFF, 0xFE]))}.{SIG}",  # not UTF-8
    f"1.{'A' * 600}.{SIG}",
    f"1.Lw.{SIG[:-2]}==",
    f"1 .Lw.{SIG}",
    f"1.Lw.{SIG}\n",
]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed_tokens_are_refused_as_malformed(token: str) -> None:
    with pytest.raises(TokenMalformedError):
        verify(KEYS, MASTER, token, NOW)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=120),
        st.from_regex(r"\A[0-9]{1,13}\.[A-Za-z0-9_=-]{0,12}\.[A-Za-z0-9_=-]{40,46}\Z"),
        st.builds(
            lambda e, s, g: f"{e}.{s}.{g}",
            st.integers(min_value=-5, max_value=10**13),
            st.sampled_from(["Lw", _b64(SCOPE.encode()), _b64(b"/other/"), "", "Lw=="]),
            st.text(alphabet=string.ascii_letters + string.digits + "-_", max_size=50),
        ),
    )
)
def test_fuzzed_tokens_only_ever_raise_access_denied(token: str) -> None:
    with pytest.raises(AccessDeniedError) as caught:
        verify(KEYS, MASTER, token, NOW)
    assert caught.value.status == 403


@pytest.mark.parametrize(
    "scope", ["", "track/", "/a//b", "/../x", "/a/./b", "/.git/", "/a b/", "/a%2f/"]
)
def test_signing_refuses_scopes_that_are_not_plain_paths(scope: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        sign_path(KEY.encode(), scope, NOW)


def test_signing_refuses_an_empty_key_and_bad_expiry() -> None:
    with pytest.raises(ValueError, match="empty"):
        sign_path(b"", SCOPE, NOW)
    with pytest.raises(ValueError, match="expires"):
        sign_path(KEY.encode(), SCOPE, -1)


def test_scope_rules() -> None:
    assert check_scope("/") == "/"
    assert covers(SCOPE, SEGMENT) and covers(MASTER, MASTER)
    assert not covers(f"/{TRACK}", SEGMENT)  # a prefix ends in "/"
    with pytest.raises(ValueError, match="cover"):
        signed_url(KEY.encode(), "/other/", MASTER, NOW)


def test_token_paths_split_and_redact() -> None:
    token = sign_path(KEY.encode(), SCOPE, NOW)
    assert split_token_path(f"/t/{token}{MASTER}", strict=False) == (token, MASTER)
    assert split_token_path(MASTER, strict=True) == (None, MASTER)
    # A track named "t": with signing off only a token-shaped segment is a token.
    assert split_token_path("/t/aac-64k/playlist.m3u8", strict=False) == (
        None,
        "/t/aac-64k/playlist.m3u8",
    )
    assert split_token_path("/t/aac-64k/playlist.m3u8", strict=True) == (
        "aac-64k",
        "/playlist.m3u8",
    )
    assert redact_path(f"/t/{token}{MASTER}") == f"/t/<token>{MASTER}"
    assert token not in redact_path(f"/t/{token}{MASTER}")


def test_bearer_checks() -> None:
    check_bearer(f"Bearer {ADMIN}", ADMIN)
    check_bearer(f"bearer   {ADMIN}  ", ADMIN)
    for header in (None, "", "Bearer", "Bearer ", f"Basic {ADMIN}", ADMIN):
        with pytest.raises(AdminTokenMissingError):
            check_bearer(header, ADMIN)
    for header in ("Bearer wrong", f"Bearer {ADMIN}x", f"Bearer {ADMIN[:-1]}", "Bearer é\udcff"):
        with pytest.raises(AdminTokenInvalidError) as caught:
            check_bearer(header, ADMIN)
        assert ADMIN not in str(caught.value)


# -- settings --------------------------------------------------------------------------


def test_settings_read_secrets_from_the_environment_and_toml(tmp_path: Path) -> None:
    loaded = load_settings(
        {"root": "/srv"},
        env={"CADENZA_SIGNING_KEYS": f" {KEY} , {OLD_KEY},", "CADENZA_ADMIN_TOKEN": ADMIN},
    )
    assert loaded.signing_keys == (KEY, OLD_KEY)
    assert loaded.admin_token == ADMIN
    config = tmp_path / "cadenza.origin.toml"
    config.write_text(f'[origin]\nsigning_keys = ["{KEY}"]\n', encoding="utf-8")
    assert load_settings({"root": "/srv"}, env={}, config_file=config).signing_keys == (KEY,)
    off = load_settings({"root": "/srv"}, env={})
    assert (off.signing_keys, off.admin_token) == ((), None)


@pytest.mark.parametrize("value", [",", " , ,"])
def test_signing_keys_of_only_separators_are_an_error_not_signing_off(value: str) -> None:
    with pytest.raises(SettingsError, match="only empty keys"):
        load_settings({"root": "/srv"}, env={"CADENZA_SIGNING_KEYS": value})


def test_settings_repr_holds_no_secret() -> None:
    loaded = Settings(
        root="/srv",
        signing_keys=(KEY, OLD_KEY),
        admin_token=ADMIN,
        redis_url="redis://:hunter2-redis-password@redis:6379/0",
    )
    shown = repr(loaded) + str(loaded)
    for secret in (KEY, OLD_KEY, ADMIN, "hunter2"):
        assert secret not in shown


@pytest.mark.parametrize(
    ("env", "secret"),
    [
        ({"CADENZA_SIGNING_KEYS": "short-key-1"}, "short-key-1"),
        ({"CADENZA_SIGNING_KEYS": f"{KEY},tiny-secret"}, "tiny-secret"),
        ({"CADENZA_ADMIN_TOKEN": "short-admin"}, "short-admin"),
    ],
)
def test_bad_secret_settings_are_errors_that_do_not_echo_them(
    env: dict[str, str], secret: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"root": "/srv"}, env=env)
    error = caught.value
    assert "16" in str(error)
    for shown in (str(error), repr(error), repr(error.value), repr(error.args)):
        assert secret not in shown
        assert KEY not in shown


def test_a_misspelt_secret_in_toml_is_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "cadenza.origin.toml"
    config.write_text(f'signing_key = "{KEY}"\n', encoding="utf-8")
    with pytest.raises(SettingsError, match="unknown setting") as caught:
        load_settings({"root": "/srv"}, env={}, config_file=config)
    assert KEY not in str(caught.value)


# -- the app ---------------------------------------------------------------------------


async def _signed_client(make_client: MakeClient, **overrides: Any) -> Any:
    return await make_client("local", signing_keys=(KEY, OLD_KEY), admin_token=ADMIN, **overrides)


async def _error(response: Any) -> str:
    body = await response.json()
    assert set(body) == {"error", "detail"}
    return str(body["error"])


async def test_valid_token_serves_manifests_and_segments(make_client: MakeClient) -> None:
    client = await _signed_client(make_client)
    for path in (MASTER, MPD, SEGMENT):
        response = await client.get(_signed(path))
        assert response.status == 200, path
    ranged = await client.get(_signed(SEGMENT), headers={"Range": "bytes=0-7"})
    assert ranged.status == 206
    filtered = await client.get(_signed(MASTER) + "?codec=aac")
    assert filtered.status == 200
    assert b"opus" not in await filtered.read()


async def test_a_token_on_the_master_carries_over_to_every_uri_it_lists(
    make_client: MakeClient,
) -> None:
    """Players resolve playlist and MPD URIs relative to the manifest: every one of
    them lands below the same /t/<token>/ and is served."""
    client = await _signed_client(make_client)
    master_url = _signed(MASTER)
    master = (await (await client.get(master_url)).read()).decode()
    playlists = [urljoin(master_url, uri) for uri in _hls_uris(master)]
    assert playlists
    fetched = 0
    for playlist_url in playlists:
        assert playlist_url.startswith(master_url.rsplit("/", 1)[0] + "/")
        response = await client.get(playlist_url)
        assert response.status == 200, playlist_url
        media = _hls_uris((await response.read()).decode())
        for uri in media[:3]:  # the init segment and the first segments
            assert (await client.get(urljoin(playlist_url, uri))).status == 200, uri
            fetched += 1
    assert fetched >= len(playlists)

    mpd_url = _signed(MPD)
    mpd = etree.fromstring(await (await client.get(mpd_url)).read())
    for url in _dash_urls(mpd, mpd_url):
        assert url.startswith(mpd_url.rsplit("/", 1)[0] + "/")
        assert (await client.get(url)).status in (200, 206), url


def _hls_uris(text: str) -> list[str]:
    uris = re.findall(r'URI="([^"]+)"', text)
    uris += [line for line in text.splitlines() if line and not line.startswith("#")]
    return uris


def _dash_urls(mpd: Any, mpd_url: str) -> list[str]:
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    urls: list[str] = []
    for rep in mpd.iterfind(".//d:Representation", ns):
        base = urljoin(mpd_url, rep.findtext("d:BaseURL", namespaces=ns) or "")
        template = rep.find("d:SegmentTemplate", ns)
        if template is None:
            urls.append(base)
            continue
        first = template.get("startNumber", "1")
        width = re.search(r"\$Number(?:%0(\d+)d)?\$", template.get("media", ""))
        assert width is not None
        number = first.zfill(int(width.group(1) or 0))
        media = template.get("media", "").replace(width.group(0), number)
        urls += [urljoin(base, template.get("initialization", "")), urljoin(base, media)]
    assert urls
    return urls


@pytest.mark.parametrize(
    ("make_path", "code"),
    [
        (lambda: SEGMENT, "token_missing"),
        (lambda: MASTER, "token_missing"),
        (lambda: f"/{TRACK}/presentation.json", "token_missing"),
        (lambda: _signed(SEGMENT, expires_s=int(time.time()) - 5), "token_expired"),
        (lambda: _signed(SEGMENT, key="a-forger-s-key-0123456789"), "bad_signature"),
        (lambda: _signed(SEGMENT, scope="/other/"), "wrong_path"),
        (lambda: _signed(SEGMENT, scope=MASTER), "wrong_path"),
        (lambda: f"/t/garbage{SEGMENT}", "token_malformed"),
        (lambda: f"/t/{_token()}x{SEGMENT}", "token_malformed"),
    ],
    ids=["bare-segment", "bare-master", "bare-json", "expired", "forged", "swapped",
         "exact-scope-elsewhere", "garbage", "altered"],
)  # fmt: skip
async def test_refusals_are_403_with_a_reason(
    make_client: MakeClient, make_path: Any, code: str
) -> None:
    client = await _signed_client(make_client)
    path = make_path()
    response = await client.get(path)
    assert response.status == 403
    assert await _error(response) == code
    text = await response.text()
    expected_signature = _token().split(".")[2]
    assert expected_signature not in text
    assert KEY not in text
    # HEAD is refused the same way.
    assert (await client.head(path)).status == 403


async def test_a_rotated_out_key_stops_working_and_the_previous_key_still_works(
    make_client: MakeClient,
) -> None:
    client = await _signed_client(make_client)
    assert (await client.get(_signed(SEGMENT, key=OLD_KEY))).status == 200
    retired = await make_client("local", signing_keys=(KEY,))
    response = await retired.get(_signed(SEGMENT, key=OLD_KEY))
    assert await _error(response) == "bad_signature"


async def test_without_signing_keys_tokens_are_ignored_and_bare_paths_served(
    make_client: MakeClient,
) -> None:
    client = await make_client("local")
    bare = await (await client.get(SEGMENT)).read()
    signed = await client.get(_signed(SEGMENT, key="any-key-at-all-0123456789"))
    assert signed.status == 200
    assert await signed.read() == bare


async def test_health_metrics_player_and_open_api_stay_open(make_client: MakeClient) -> None:
    client = await _signed_client(make_client)
    for path in ("/healthz", "/readyz", "/metrics", "/player/", "/player/player.js", "/v1/tracks"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/player/lib/hls.min.js")).status in (200, 404)
    beacon = await client.post(
        "/v1/beacons", data=b'sid="s1",br=128', headers={"Content-Type": "application/cmcd"}
    )
    assert beacon.status == 204


@pytest.mark.parametrize(
    "path", ["/v1/sessions", "/v1/sessions/s1", "/v1/ladder/recommendation", "/v1/pathways"]
)
async def test_admin_endpoints_need_the_bearer_token(make_client: MakeClient, path: str) -> None:
    client = await _signed_client(make_client)
    missing = await client.get(path)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert await _error(missing) == "unauthorized"
    basic = await client.get(path, headers={"Authorization": f"Basic {ADMIN}"})
    assert basic.status == 401
    wrong = await client.get(path, headers={"Authorization": "Bearer not-the-admin-token"})
    assert wrong.status == 403
    assert await _error(wrong) == "bad_admin_token"
    assert ADMIN not in await wrong.text()
    right = await client.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
    assert right.status not in (401, 403)


async def test_admin_endpoints_are_open_without_an_admin_token(make_client: MakeClient) -> None:
    client = await make_client("local")
    assert (await client.get("/v1/sessions")).status == 200


async def test_preflight_allows_the_authorization_header(make_client: MakeClient) -> None:
    client = await _signed_client(make_client)
    response = await client.options(
        "/v1/sessions",
        headers={"Origin": "http://ops.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status == 204
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


async def _verdict(client: Any, uri: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    response = await client.get("/v1/auth", headers={"X-Original-URI": uri})
    return response.status, dict(response.headers), await response.json()


async def test_auth_endpoint_gives_the_edge_a_cacheable_verdict(make_client: MakeClient) -> None:
    client = await _signed_client(make_client)
    expires = int(time.time()) + 30
    status, headers, _ = await _verdict(client, _signed(SEGMENT, expires_s=expires) + "?CMCD=x")
    assert status == 200
    max_age = int(headers["Cache-Control"].removeprefix("max-age="))
    assert 0 < max_age <= 30  # never kept past the token's expiry
    status, headers, _ = await _verdict(client, _signed(SEGMENT, expires_s=expires + 3600))
    assert headers["Cache-Control"] == "max-age=60"
    for uri, code in [
        (SEGMENT, "token_missing"),
        (_signed(SEGMENT, key="a-forger-s-key-0123456789"), "bad_signature"),
        (_signed(SEGMENT, expires_s=int(time.time()) - 1), "token_expired"),
        (_signed(SEGMENT, scope="/other/"), "wrong_path"),
        # What nginx would normalise to another path than the one checked: refused.
        (f"/player/../{TRACK}/aac-64k/seg-00001.m4s", "forbidden"),
        (f"/v1/..{SEGMENT}", "forbidden"),
        (_signed(f"/other/..{SEGMENT}", scope="/other/"), "forbidden"),
        (_signed(f"/{TRACK}//aac-64k/seg-00001.m4s"), "forbidden"),
        (_signed(f"/{TRACK}/aac-64k/seg-0000%31.m4s"), "forbidden"),
        ("/t/" + _token() + "/" + TRACK + "/%2e%2e/x.m4s", "forbidden"),
    ]:
        status, headers, body = await _verdict(client, uri)
        assert (status, body["error"], headers["X-Cadenza-Auth-Error"]) == (403, code, code), uri
        assert headers["Cache-Control"].startswith("max-age=")
    for uri in ("/healthz", "/metrics", "/player/", "/v1/sessions", "/"):
        assert (await _verdict(client, uri))[0] == 200, uri
    assert (await client.get("/v1/auth")).status == 400


async def test_auth_endpoint_allows_everything_without_signing(make_client: MakeClient) -> None:
    client = await make_client("local")
    for uri in (SEGMENT, "/player/../x", _signed(SEGMENT, key="whatever-key-0123456789")):
        assert (await _verdict(client, uri))[0] == 200


async def test_auth_endpoint_is_not_rate_limited_per_address(make_client: MakeClient) -> None:
    """The edge asks it for every uncached verdict from one address."""
    client = await _signed_client(make_client, ip_rate_per_s=0.5, ip_burst=1)
    for _ in range(5):
        assert (await _verdict(client, _signed(SEGMENT)))[0] == 200


async def test_refusals_are_counted_and_metrics_hold_no_secret(make_client: MakeClient) -> None:
    client = await _signed_client(make_client)
    await client.get(_signed(SEGMENT, key="a-forger-s-key-0123456789"))
    await client.get(SEGMENT)
    await client.get("/v1/sessions", headers={"Authorization": "Bearer nope"})
    await client.get(_signed(SEGMENT))
    text = await (await client.get("/metrics")).text()
    assert 'cadenza_access_denied_total{reason="bad_signature"} 1.0' in text
    assert 'cadenza_access_denied_total{reason="token_missing"} 1.0' in text
    assert 'cadenza_access_denied_total{reason="bad_admin_token"} 1.0' in text
    for secret in (KEY, OLD_KEY, ADMIN, "/t/"):
        assert secret not in text


async def test_secrets_never_reach_the_log(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await _signed_client(make_client)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    await client.get(_signed(SEGMENT))
    await client.get(_signed(MASTER) + "?sid=s1&CMCD=sid%3D%22s1%22")
    await client.get(_signed(SEGMENT, key="a-forger-s-key-0123456789"))
    await client.get(_signed(SEGMENT, expires_s=1))
    await client.get(SEGMENT)
    await client.get("/v1/sessions", headers=admin)
    await client.get("/v1/sessions/s1", headers=admin)
    await client.get("/v1/sessions", headers={"Authorization": "Bearer wrong-admin-token"})
    await client.get("/v1/ladder/recommendation", headers=admin)
    await client.get("/v1/auth", headers={"X-Original-URI": _signed(SEGMENT)})
    with pytest.raises(SettingsError):
        load_settings({"root": "/srv"}, env={"CADENZA_SIGNING_KEYS": "short-secret"})
    logging.getLogger("cadenza.test").info("settings: %r", load_settings(
        {"root": "/srv"}, env={"CADENZA_SIGNING_KEYS": KEY, "CADENZA_ADMIN_TOKEN": ADMIN}
    ))  # fmt: skip
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for secret in (KEY, OLD_KEY, ADMIN, "short-secret"):
        assert secret not in caplog.text


@pytest.fixture(scope="module")
def fuzz_origin(packaged_root: Path) -> Iterator[ThreadedOrigin]:
    server = ThreadedOrigin(Settings(root=str(packaged_root), signing_keys=(KEY,))).start()
    try:
        yield server
    finally:
        server.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=80),
        st.from_regex(r"\A[0-9]{1,13}\.[A-Za-z0-9_-]{0,10}\.[A-Za-z0-9_-]{40,46}\Z"),
    ),
    st.sampled_from([MASTER, SEGMENT, MPD]),
)
def test_fuzzed_token_segments_are_403_never_500(
    fuzz_origin: ThreadedOrigin, token: str, path: str
) -> None:
    answer = get(fuzz_origin.port, f"/t/{quote(token, safe='')}{path}")
    assert answer.status == 403, (token, answer.status, answer.body[:200])
    assert json.loads(answer.body)["error"] in (
        "token_malformed",
        "bad_signature",
        "token_missing",
    )


# -- cadenza sign ----------------------------------------------------------------------


async def test_cadenza_sign_prints_a_url_the_origin_accepts(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CADENZA_SIGNING_KEYS", f"{KEY},{OLD_KEY}")
    assert cadenza_main(["sign", TRACK, "--ttl", "120", "--base-url", "https://cdn.example/"]) == 0
    out, err = capsys.readouterr()
    url = out.strip()
    assert url.startswith("https://cdn.example/t/") and url.endswith(MASTER)
    assert KEY not in out + err and OLD_KEY not in out + err
    client = await _signed_client(make_client)
    path = urlsplit(url).path
    assert (await client.get(path)).status == 200
    # The token covers the track folder: a segment below the same token is served.
    assert (await client.get(path.removesuffix(MASTER) + SEGMENT)).status == 200
    token = path.split("/")[2]
    expires = int(token.split(".")[0])
    assert 110 <= expires - time.time() <= 125

    assert cadenza_main(["sign", TRACK, "--file", "manifest.mpd", "--scope", "file"]) == 0
    only_mpd = urlsplit(capsys.readouterr().out.strip()).path
    assert (await client.get(only_mpd)).status == 200
    assert (await client.get(only_mpd.removesuffix(MPD) + SEGMENT)).status == 403


def test_cadenza_sign_without_a_key_or_with_a_bad_track_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CADENZA_SIGNING_KEYS", raising=False)
    assert cadenza_main(["sign", TRACK]) == 2
    assert "CADENZA_SIGNING_KEYS" in capsys.readouterr().err
    monkeypatch.setenv("CADENZA_SIGNING_KEYS", KEY)
    assert cadenza_main(["sign", "../etc"]) == 2
    assert cadenza_main(["sign", TRACK, "--ttl", "0"]) == 2
    out, err = capsys.readouterr()
    assert KEY not in out + err


# -- through the real nginx edge -------------------------------------------------------


@pytest.fixture(scope="module")
def signed_cdn(packaged_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The edge URL: ``cadenza serve`` with signing keys behind the shipped nginx edge."""
    prefix = tmp_path_factory.mktemp("nginx-auth")
    secrets = {"CADENZA_SIGNING_KEYS": f"{KEY},{OLD_KEY}", "CADENZA_ADMIN_TOKEN": ADMIN}
    with cadenza_serve(str(packaged_root), prefix, env=secrets, manifest_max_age_s=1) as origin:
        edge = NginxEdge(prefix / "edge", f"127.0.0.1:{origin.port}", free_port())
        edge.start()
        try:
            yield edge.url
        finally:
            edge.stop()
    log = origin.log.read_bytes() + (edge.prefix / "access.log").read_bytes()
    assert KEY.encode() not in log and ADMIN.encode() not in log


def test_edge_serves_a_valid_token_and_shares_the_cache_across_tokens(signed_cdn: str) -> None:
    segment = f"/{TRACK}/aac-128k/seg-00002.m4s"
    first = fetch(signed_cdn + _signed(segment))
    second = fetch(signed_cdn + _signed(segment))
    other_viewer = fetch(signed_cdn + _signed(segment, expires_s=int(time.time()) + 900))
    rotated_key = fetch(signed_cdn + _signed(segment, key=OLD_KEY))
    assert [r[0] for r in (first, second, other_viewer, rotated_key)] == [200] * 4
    assert first[1]["X-Cache-Status"] == "MISS"
    assert {r[1]["X-Cache-Status"] for r in (second, other_viewer, rotated_key)} == {"HIT"}
    assert first[2] == second[2] == other_viewer[2]


def test_edge_refuses_bad_tokens_for_objects_it_has_cached(signed_cdn: str) -> None:
    segment = f"/{TRACK}/aac-128k/seg-00003.m4s"
    assert fetch(signed_cdn + _signed(segment))[0] == 200
    assert fetch(signed_cdn + _signed(segment))[1]["X-Cache-Status"] == "HIT"
    for path, code in [
        (segment, "token_missing"),
        (_signed(segment, expires_s=int(time.time()) - 5), "token_expired"),
        (_signed(segment, key="a-forger-s-key-0123456789"), "bad_signature"),
        (_signed(segment, scope="/other/"), "wrong_path"),
        (f"/t/garbage{segment}", "token_malformed"),
    ]:
        status, headers, body = fetch(signed_cdn + path)
        assert status == 403, path
        assert json.loads(body)["error"] == code, path
        assert headers["X-Cadenza-Auth-Error"] == code
        assert "X-Cache-Status" not in headers or headers["X-Cache-Status"] == ""
    # Asking again: the refusal comes from the edge's verdict cache, reason and all.
    status, headers, body = fetch(signed_cdn + segment)
    assert (status, json.loads(body)["error"]) == (403, "token_missing")


def test_edge_refuses_paths_nginx_would_normalise_onto_a_cached_object(signed_cdn: str) -> None:
    segment = f"/{TRACK}/aac-128k/seg-00001.m4s"
    assert fetch(signed_cdn + _signed(segment))[0] == 200
    for path in (
        f"/player/..{segment}",
        f"/v1/..{segment}",
        _signed(f"/other/..{segment}", scope="/other/"),
        _signed(f"/{TRACK}/aac-128k//seg-00001.m4s"),
        f"/healthz/..{segment}",
        f"/player/%2e%2e{segment}",
    ):
        status = fetch(signed_cdn + path)[0]
        assert status in (400, 403, 404), (path, status)


def test_edge_plays_a_signed_master_through_relative_uris(signed_cdn: str) -> None:
    master_url = signed_cdn + _signed(MASTER)
    status, _, body = fetch(master_url)
    assert status == 200
    (playlist,) = [u for u in _hls_uris(body.decode()) if "aac-64k" in u][:1]
    playlist_url = urljoin(master_url, playlist)
    status, _, media = fetch(playlist_url)
    assert status == 200
    for uri in _hls_uris(media.decode())[:2]:
        assert fetch(urljoin(playlist_url, uri))[0] == 200, uri


def test_edge_keeps_health_open_and_admin_behind_the_bearer_token(signed_cdn: str) -> None:
    assert fetch(signed_cdn + "/healthz")[0] == 200
    assert fetch(signed_cdn + "/v1/sessions")[0] == 401
    assert fetch(signed_cdn + "/v1/sessions", Authorization=f"Bearer {ADMIN}")[0] == 200
    assert fetch(signed_cdn + "/_cadenza_auth")[0] == 404
