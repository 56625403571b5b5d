"""Origin settings: a frozen dataclass built from CLI flags, then ``CADENZA_*``
environment variables, then an optional TOML file, then defaults (in that
order of precedence).

| setting | env | default | meaning |
|---|---|---|---|
| root | CADENZA_ROOT | (required) | package folder, or `s3://bucket/prefix` |
| host | CADENZA_HOST | 127.0.0.1 | listen address |
| port | CADENZA_PORT | 8080 | listen port |
| workers | CADENZA_WORKERS | 1 | processes sharing the port (SO_REUSEPORT) |
| manifest_max_age_s | CADENZA_MANIFEST_MAX_AGE_S | 60 | max-age of playlists, MPDs |
| segment_max_age_s | CADENZA_SEGMENT_MAX_AGE_S | 31536000 | max-age of segments (immutable) |
| cors_allow_origin | CADENZA_CORS_ALLOW_ORIGIN | * | Access-Control-Allow-Origin |
| cache_max_bytes | CADENZA_CACHE_MAX_BYTES | 268435456 | hot in-memory cache size |
| cache_max_object_bytes | CADENZA_CACHE_MAX_OBJECT_BYTES | 16777216 | larger: not cached |
| storage_timeout_s | CADENZA_STORAGE_TIMEOUT_S | 5.0 | connect/read timeout for S3 (then 504) |
| retry_after_s | CADENZA_RETRY_AFTER_S | 5 | Retry-After on a storage 503 or 504 |
| s3_endpoint_url | AWS_ENDPOINT_URL | (AWS) | S3-compatible endpoint |
| player_assets_dir | CADENZA_PLAYER_ASSETS_DIR | node_modules | npm folder with the players |
| steering | CADENZA_STEERING | true | per-session manifests and CMSD for sessions with a `sid` |
| sessions_max | CADENZA_SESSIONS_MAX | 100000 | sessions kept (least recently updated evicted) |
| session_ttl_s | CADENZA_SESSION_TTL_S | 1800 | forgotten this long after its last update |
| redis_url | CADENZA_REDIS_URL | (none) | `redis://host:port/db`: shared sessions, priors |
| redis_timeout_s | CADENZA_REDIS_TIMEOUT_S | 0.25 | longest Redis round trip (then local) |
| redis_retry_s | CADENZA_REDIS_RETRY_S | 5.0 | after a Redis failure, local state this long |
| beacon_max_bytes | CADENZA_BEACON_MAX_BYTES | 65536 | largest beacon body (413 above) |
| beacon_max_entries | CADENZA_BEACON_MAX_ENTRIES | 256 | most payloads in one beacon body |
| beacon_rate_per_s | CADENZA_BEACON_RATE_PER_S | 10.0 | beacon payloads per session per second |
| beacon_burst | CADENZA_BEACON_BURST | 50 | payloads a session may send at once |
| ip_rate_per_s | CADENZA_IP_RATE_PER_S | 0 (off) | `/v1/` requests per client address per second |
| ip_burst | CADENZA_IP_BURST | 20 | `/v1/` requests a client address may send at once |
| body_timeout_s | CADENZA_BODY_TIMEOUT_S | 10.0 | longest wait for a request body (408 after) |
| keepalive_timeout_s | CADENZA_KEEPALIVE_TIMEOUT_S | 15.0 | idle, or headers incomplete: closed |
| send_timeout_s | CADENZA_SEND_TIMEOUT_S | 30.0 | sent data unacknowledged this long: dropped |
| max_connections | CADENZA_MAX_CONNECTIONS | 4096 | open connections per process (0: no limit) |
| max_header_bytes | CADENZA_MAX_HEADER_BYTES | 8190 | longest request line, longest header |
| max_headers | CADENZA_MAX_HEADERS | 64 | most header fields in a request |
| shutdown_timeout_s | CADENZA_SHUTDOWN_TIMEOUT_S | 10.0 | SIGTERM: in-flight answers' grace |
| fast_path | CADENZA_FAST_PATH | true | media files answered ahead of aiohttp (fastpath.py) |
| signing_keys | CADENZA_SIGNING_KEYS | (none: off) | secret: URL-signing keys, current first |
| admin_token | CADENZA_ADMIN_TOKEN | (none: open) | secret: bearer for /v1/sessions, /v1/ladder |
| pathways | CADENZA_PATHWAYS | (none: off) | content steering: id, base_url, weight |
| pathway_clones | (TOML only) | (none) | id, base_id, host, params, weight |
| content_steering_url | CADENZA_CONTENT_STEERING_URL | (Host; private) | steering server URL |
| content_steering_default | CADENZA_CONTENT_STEERING_DEFAULT | (first) | start pathway |
| content_steering_ttl_s | CADENZA_CONTENT_STEERING_TTL_S | 10 | TTL of steering responses |
| content_steering_query_before_start | (same, upper case) | false | DASH queryBeforeStart |
| pathway_health_path | CADENZA_PATHWAY_HEALTH_PATH | /healthz | probed below base_url |
| pathway_health_interval_s | CADENZA_PATHWAY_HEALTH_INTERVAL_S | 2.0 | between probes |
| pathway_health_timeout_s | CADENZA_PATHWAY_HEALTH_TIMEOUT_S | 1.0 | slower: failed |
| pathway_health_failures | CADENZA_PATHWAY_HEALTH_FAILURES | 3 | in a row: down (1 ok: up) |
| pathway_recover_hold_s | CADENZA_PATHWAY_RECOVER_HOLD_S | 10.0 | back up: ranked low this long |
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadenza.origin.errors import SettingsError
from cadenza.origin.pathways import (
    PathwayCloneSetting,
    PathwayConfigError,
    PathwaySetting,
    check_steering,
    parse_clones,
    parse_pathways,
)


@dataclass(frozen=True, slots=True)
class Settings:
    root: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    manifest_max_age_s: int = 60
    segment_max_age_s: int = 31_536_000
    cors_allow_origin: str = "*"
    cache_max_bytes: int = 256 * 1024 * 1024
    cache_max_object_bytes: int = 16 * 1024 * 1024
    storage_timeout_s: float = 5.0
    retry_after_s: int = 5
    s3_endpoint_url: str | None = None
    player_assets_dir: str = "node_modules"
    steering: bool = True
    sessions_max: int = 100_000
    session_ttl_s: float = 1800.0
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_timeout_s: float = 0.25
    redis_retry_s: float = 5.0
    beacon_max_bytes: int = 64 * 1024
    beacon_max_entries: int = 256
    beacon_rate_per_s: float = 10.0
    beacon_burst: int = 50
    ip_rate_per_s: float = 0.0  # 0: no per-address limit
    ip_burst: int = 20
    body_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    send_timeout_s: float = 30.0
    max_connections: int = 4096
    max_header_bytes: int = 8190
    max_headers: int = 64
    shutdown_timeout_s: float = 10.0
    fast_path: bool = True
    # Secrets: never in repr, logs, errors or metrics (see origin/auth.py).
    signing_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_token: str | None = field(default=None, repr=False)
    pathways: tuple[PathwaySetting, ...] = ()
    pathway_clones: tuple[PathwayCloneSetting, ...] = ()
    content_steering_url: str | None = None
    content_steering_default: str | None = None
    content_steering_ttl_s: int = 10
    content_steering_query_before_start: bool = False
    pathway_health_path: str = "/healthz"
    pathway_health_interval_s: float = 2.0
    pathway_health_timeout_s: float = 1.0
    pathway_health_failures: int = 3
    pathway_recover_hold_s: float = 10.0

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
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

MIN_SECRET_CHARS = 16
_HIDDEN = "(hidden)"  # what a SettingsError shows instead of a secret


def _signing_keys(value: object) -> tuple[str, ...]:
    """A comma-separated string (environment) or a list (TOML); never echoed."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(k, str) for k in items):
        raise SettingsError("signing_keys", _HIDDEN, "expected comma-separated strings")
    keys = tuple(k.strip() for k in items if k.strip())
    if not keys and len(items) > 1:
        # "," or ["", ""]: meant to sign, but would silently leave URLs unsigned.
        raise SettingsError(
            "signing_keys", _HIDDEN, "holds only empty keys; unset it to turn signing off"
        )
    if any(len(k) < MIN_SECRET_CHARS for k in keys):
        raise SettingsError(
            "signing_keys", _HIDDEN, f"each key must be at least {MIN_SECRET_CHARS} characters"
        )
    return keys


def _coerce(name: str, value: object) -> object:
    kind = _FIELDS[name].type
    if name == "signing_keys":
        return _signing_keys(value)
    if name == "admin_token":
        if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_CHARS:
            raise SettingsError(name, _HIDDEN, f"must be at least {MIN_SECRET_CHARS} characters")
        return value.strip()
    try:
        if name == "pathways":
            return parse_pathways(value)
        if name == "pathway_clones":
            return parse_clones(value)
    except PathwayConfigError as exc:
        raise SettingsError(name, "...", str(exc)) from None
    text = str(value)
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
    """Merge the three sources; unknown TOML keys are errors, not silently ignored."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError("config", str(config_file), str(exc)) from exc
        table = data.get("origin", data)
        for key, value in table.items():
            if key not in _FIELDS:
                # Not echoed: a misspelt secret (signing_key = ...) must not reach a log.
                raise SettingsError(key, _HIDDEN, f"unknown setting in {config_file}")
            values[key] = value
    if env.get("AWS_ENDPOINT_URL"):
        values["s3_endpoint_url"] = env["AWS_ENDPOINT_URL"]
    for name in _FIELDS:
        env_name = f"CADENZA_{name.upper()}"
        if env.get(env_name):
            values[name] = env[env_name]
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
