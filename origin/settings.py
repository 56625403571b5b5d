"""Origin settings: a frozen dataclass built from CLI flags, then ``CADENZA_*``
environment variables, then an optional TOML file (``--config``), then defaults
(in that order of precedence).

Every field documents itself: its default, its meaning and any other names it is
read under travel in the field's metadata (:class:`SettingDoc`), and the settings
table of ``docs/operating.md`` is generated from them by
``cadenza.origin.settings_doc``.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.origin.errors import SettingsError
from cadenza.origin.logs import LogFormat
from cadenza.origin.pathways import (
    PathwayCloneSetting,
    PathwayConfigError,
    PathwaySetting,
    check_steering,
    parse_clones,
    parse_pathways,
)
from cadenza.origin.proxies import parse_networks
from cadenza.origin.setting_field import DOC_KEY, SettingDoc, describe, setting
from cadenza.origin.settings_secrets import HIDDEN, SECRET_VALUES


class AbrDelivery(enum.StrEnum):
    """How a segment the origin decided (``?abr=origin``) reaches the player."""

    REDIRECT = "redirect"  # 302 to the chosen rung's own immutable, cacheable URL
    DIRECT = "direct"  # the chosen rung's bytes, served private
    # Per request (cadenza.abr.delivery): the bytes while the session starts or its
    # link is slower than the ladder needs, else the redirect.
    ADAPTIVE = "adaptive"


@dataclass(frozen=True, slots=True)
class Settings:
    root: str = field(
        metadata={DOC_KEY: SettingDoc("package folder, or `s3://bucket/prefix`", "(required)")}
    )
    host: str = setting("127.0.0.1", "listen address")
    port: int = setting(8080, "listen port")
    workers: int = setting(1, "processes sharing the port (SO_REUSEPORT); metrics add up")
    manifest_max_age_s: int = setting(60, "max-age of playlists and MPDs")
    segment_max_age_s: int = setting(31_536_000, "max-age of segments (immutable)")
    cors_allow_origin: str = setting("*", "Access-Control-Allow-Origin")
    cache_max_bytes: int = setting(256 * 1024 * 1024, "hot in-memory cache size")
    cache_max_object_bytes: int = setting(
        16 * 1024 * 1024, "larger objects are streamed, not cached"
    )
    storage_timeout_s: float = setting(5.0, "S3 connect/read timeout (then `504`)")
    retry_after_s: int = setting(5, "Retry-After on a storage 503 or 504")
    s3_endpoint_url: str | None = setting(
        None,
        "S3-compatible endpoint (MinIO, a moto server)",
        default_text="AWS",
        env_aliases=("AWS_ENDPOINT_URL",),
    )
    player_assets_dir: str = setting(
        "",
        "npm `node_modules` folder the demo page's players come from; empty: the copies "
        "built into the installed package, else the source checkout's `node_modules`",
        default_text="(built in)",
    )
    guidance: bool = setting(
        True,
        "ABR guidance: per-session manifests and CMSD for sessions with a `sid`. "
        "`CADENZA_STEERING` and TOML `steering`, its old name, are still read; "
        "given both, the new name wins",
        env_aliases=("CADENZA_STEERING",),
        toml_aliases=("steering",),
    )
    abr_delivery: AbrDelivery = setting(  # noqa: RUF009 (an enum member is immutable)
        AbrDelivery.ADAPTIVE,
        "origin-decided ABR (`?abr=origin`): `redirect` answers a group segment `302` to "
        "the chosen rung's cacheable URL; `direct` serves that rung's bytes `private` (and "
        "measures their TCP delivery rate); `adaptive` (the default: `direct`'s QoE, most "
        "segments still redirected on fast links, see docs/abr.md) serves the bytes before "
        "playback starts and while the session's throughput estimate is below 1.25 times the "
        "top rung, and redirects otherwise",
    )
    sessions_max: int = setting(100_000, "sessions kept (least recently updated evicted first)")
    session_ttl_s: float = setting(1800.0, "a session is forgotten this long after its last update")
    redis_url: str | None = setting(
        None,
        "`redis://host:port/db`: sessions and population priors shared by every replica "
        "(may hold a password: kept out of `repr`)",
        default_text="(none: memory)",
        secret=True,
    )
    redis_timeout_s: float = setting(
        0.25, "longest a Redis connect or round trip may take before local state answers"
    )
    redis_retry_s: float = setting(
        5.0, "after a Redis failure, local state only for this long, then Redis is tried again"
    )
    beacon_max_bytes: int = setting(64 * 1024, "largest `POST /v1/beacons` body (`413` above)")
    beacon_max_entries: int = setting(256, "most CMCD payloads in one beacon body")
    beacon_rate_per_s: float = setting(
        10.0, "sustained beacon payloads per session per second (`429` above)"
    )
    beacon_burst: int = setting(50, "payloads a session may send at once")
    prefetch: bool = setting(
        True, "warm what sessions will likely play next (see [prefetch](#prefetch))"
    )
    prefetch_min_probability: float = setting(0.3, "a next track is prepared when this likely")
    prefetch_max_tracks: int = setting(2, "most next tracks prepared per session and track")
    prefetch_segments: int = setting(2, "media segments warmed per next track (after its init)")
    prefetch_rate_per_s: float = setting(4.0, "objects warmed per second, all sessions together")
    prefetch_burst: int = setting(16, "objects warmed at once, all sessions together")
    prefetch_session_max: int = setting(12, "objects warmed per session per minute")
    prefetch_queue_max: int = setting(50, "most track ids in a stated queue (`413` above)")
    ip_rate_per_s: float = setting(
        0.0,
        "sustained `/v1/` requests per client address per second (`429` with `Retry-After` "
        "above); media is never limited",
        default_text="0 (off)",
    )
    ip_burst: int = setting(20, "`/v1/` requests a client address may send at once")
    body_timeout_s: float = setting(10.0, "longest wait for a whole request body (`408` after)")
    keepalive_timeout_s: float = setting(
        15.0,
        "a connection idle this long, or still without a whole request head this long after "
        "it opened or its last response, is closed (slowloris)",
    )
    send_timeout_s: float = setting(
        30.0,
        "a client that acknowledges nothing of a response this long (stopped reading, "
        "vanished) is dropped (`TCP_USER_TIMEOUT`, Linux)",
    )
    max_connections: int = setting(
        4096, "open connections per process; one more gets `503` and is closed (0: no limit)"
    )
    max_header_bytes: int = setting(8190, "longest request line and longest header (`400` above)")
    max_headers: int = setting(64, "most header fields in one request (`400` above)")
    shutdown_timeout_s: float = setting(
        10.0,
        "on SIGTERM: stop listening, close idle connections, let in-flight responses "
        "finish this long",
    )
    log_level: str = setting("info", "least severe log line written: debug, info, warning, error")
    log_format: LogFormat = setting(  # noqa: RUF009 (an enum member is immutable)
        LogFormat.TEXT,
        "`text` or `json` (one object a line); fields in [request logs](#request-logs)",
    )
    access_log: bool = setting(
        True, "one line per answered request at INFO (see [request logs](#request-logs))"
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        "CIDRs (comma-separated, or a TOML list) of the proxies whose `X-Forwarded-For` or "
        "`Forwarded` names the client: its address then keys sessions' networks, per-address "
        "limits and logs (see [client addresses](#client-addresses-behind-the-edge))",
        default_text="(none: the TCP peer is the client)",
    )
    fast_path: bool = setting(
        True,
        "answer plain keep-alive GET/HEAD for `.m4s`, `.mp4`, `.m3u8`, `.mpd` ahead of "
        "aiohttp, with the same headers; anything else on the connection goes to aiohttp. "
        "Off when `signing_keys` is set",
    )
    # Secrets: never in repr, logs, errors or metrics (see origin/auth.py).
    signing_keys: tuple[str, ...] = setting(
        (),
        "secret: HMAC keys for signed URLs, comma-separated (a TOML list), 16+ characters "
        "each, the first signs and all verify (see [signed URLs](players.md#signed-urls))",
        default_text="(none: no signed URLs)",
        secret=True,
    )
    admin_token: str | None = setting(
        None,
        "secret, 16+ characters: `Authorization: Bearer` token required by `/v1/sessions` "
        "and `/v1/ladder/`",
        default_text="(none: open)",
        secret=True,
    )
    key_encryption_key: str | None = setting(
        None,
        "secret: 64 hex digits, the key-encryption key that unwraps content keys for "
        "`/v1/licence/clearkey` and `/v1/keys/` (the packager's)",
        default_text="(none: no key delivery)",
        secret=True,
    )
    key_encryption_key_file: str | None = setting(
        None, "a file holding the key-encryption key (instead of `key_encryption_key`)"
    )
    key_store: str | None = setting(
        None, "the content keys' folder or `s3://` prefix", default_text="`<root>-keys`"
    )
    licence_rate_per_s: float = setting(
        20.0, "licence and key requests per client address per second (`429` above)"
    )
    pathways: tuple[PathwaySetting, ...] = setting(
        (),
        "the CDNs players are steered between: TOML `[[pathways]]` `id`, `base_url`, "
        "`weight`; or `ID[@WEIGHT]=URL,...` (see "
        "[content steering](players.md#content-steering-multi-cdn))",
        default_text="(none: no content steering)",
    )
    pathway_clones: tuple[PathwayCloneSetting, ...] = setting(
        (),
        "`[[pathway_clones]]` `id`, `base_id`, `host`, `params`, `weight`: sent as "
        "`PATHWAY-CLONES`",
        toml_only=True,
    )
    content_steering_url: str | None = setting(
        None,
        "public URL of this origin's steering server, written into the manifests (set it "
        "behind a CDN)",
        default_text="the host the manifest was asked of (the manifest is then `private`: "
        "a shared cache must not keep a Host-derived URI)",
    )
    content_steering_default: str | None = setting(
        None,
        "the pathway players start on while it is healthy, and preferred in ties",
        default_text="first pathway",
    )
    content_steering_ttl_s: int = setting(
        10, "`TTL` of steering responses: how often players ask again"
    )
    content_steering_query_before_start: bool = setting(
        False, "DASH `queryBeforeStart`: dash.js asks the steering server before playing"
    )
    pathway_health_path: str = setting("/healthz", "probed below each pathway's `base_url`")
    pathway_health_interval_s: float = setting(2.0, "time between two probes of a pathway")
    pathway_health_timeout_s: float = setting(1.0, "a probe slower than this failed")
    pathway_health_failures: int = setting(
        3, "failed probes in a row that take a pathway down (one success brings it back)"
    )
    pathway_recover_hold_s: float = setting(
        10.0, "a pathway back up ranks after steady ones this long (0: at once)"
    )
    live_poll_s: float = setting(
        0.05, "a watched live track's `live.json` is checked this often for a new part"
    )

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")


def env_names(name: str) -> tuple[str, ...]:
    """The environment variables a setting is read from, the first one set winning."""
    return (f"CADENZA_{name.upper()}", *describe(_FIELDS[name]).env_aliases)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_TOML_NAMES = {name: name for name in _FIELDS} | {
    alias: name for name, f in _FIELDS.items() for alias in describe(f).toml_aliases
}
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_POSITIVE_INTS = frozenset(
    {
        "port",
        "workers",
        "ip_burst",
        "max_header_bytes",
        "max_headers",
        "content_steering_ttl_s",
        "pathway_health_failures",
    }
)
_ZERO_MEANS_OFF = frozenset({"ip_rate_per_s", "pathway_recover_hold_s"})

MAX_PORT = 65_535
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _coerce(name: str, value: object) -> object:
    kind = _FIELDS[name].type
    secret = SECRET_VALUES.get(name)
    if secret is not None:
        return secret(value)
    try:
        if name == "pathways":
            return parse_pathways(value)
        if name == "pathway_clones":
            return parse_clones(value)
    except PathwayConfigError as exc:
        raise SettingsError(name, "...", str(exc)) from None
    if name == "trusted_proxies":
        return parse_networks(value)
    text = str(value)
    if name == "log_format":
        try:
            return LogFormat(text.strip().lower())
        except ValueError:
            raise SettingsError(name, value, "expected text or json") from None
    if name == "log_level":
        if text.strip().lower() not in LOG_LEVELS:
            raise SettingsError(name, value, f"expected one of {', '.join(LOG_LEVELS)}")
        return text.strip().lower()
    if name == "abr_delivery":
        try:
            return AbrDelivery(text.strip().lower())
        except ValueError:
            raise SettingsError(name, value, "expected redirect, direct or adaptive") from None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(name, value, "expected true or false")
    try:
        if kind == "int":
            number = int(text)
            if number < 0 or (name in _POSITIVE_INTS and number == 0):
                raise SettingsError(name, value, "must be positive")
            if name == "port" and number > MAX_PORT:
                raise SettingsError(name, value, f"must be at most {MAX_PORT}")
            return number
        if kind == "float":
            seconds = float(text)
            if not (seconds > 0 or (seconds == 0 and name in _ZERO_MEANS_OFF)):
                raise SettingsError(name, value, "must be positive")
            return seconds
    except ValueError:
        raise SettingsError(name, value, f"expected {kind}") from None
    if name == "content_steering_url" and not text.startswith(("http://", "https://")):
        raise SettingsError(name, value, "expected an http:// or https:// URL")
    if name == "pathway_health_path" and not text.startswith("/"):
        raise SettingsError(name, value, "expected a path starting with /")
    if name == "redis_url" and not text.startswith(REDIS_SCHEMES):
        # The URL may carry a password: echo only its scheme.
        shown = text.partition(":")[0] + ":..." if ":" in text else "..."
        raise SettingsError(name, shown, "expected a redis://, rediss:// or unix:// URL")
    return text


def load_settings(
    cli: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the three sources; unknown TOML keys are errors, not silently ignored.
    A setting's old names (:attr:`SettingDoc.env_aliases`, ``toml_aliases``) are read
    too, below its own name within each source."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError("config", str(config_file), str(exc)) from exc
        table = data.get("origin", data)
        for key in table:
            if key not in _TOML_NAMES:
                # Not echoed: a misspelt secret (signing_key = ...) must not reach a log.
                raise SettingsError(key, HIDDEN, f"unknown setting in {config_file}")
        # An old key first, so that its new name, when the file gives both, wins.
        for key in sorted(table, key=lambda k: k in _FIELDS):
            values[_TOML_NAMES[key]] = table[key]
    for name in _FIELDS:
        given = next((env[e] for e in env_names(name) if env.get(e)), None)
        if given is not None:
            values[name] = given
    for name, value in cli.items():
        if value is not None and name in _FIELDS:
            values[name] = value
    if not values.get("root"):
        raise SettingsError("root", None, "a ROOT folder or s3:// URL is required")
    coerced = {name: _coerce(name, value) for name, value in values.items()}
    settings = Settings(**coerced)  # type: ignore[arg-type]
    try:
        check_steering(
            settings.pathways, settings.pathway_clones, settings.content_steering_default
        )
    except PathwayConfigError as exc:
        raise SettingsError("pathways", "...", str(exc)) from None
    return settings
