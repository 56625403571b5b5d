"""Content steering configuration: the pathways (CDNs) and pathway clones the
origin steers players between, as the settings hold them.

TOML (the natural home of a list)::

    [[pathways]]
    id = "cdn-a"
    base_url = "https://a.example.com"   # track folders sit under it
    weight = 2                           # higher: preferred while healthy

    [[pathways]]
    id = "cdn-b"
    base_url = "https://b.example.com"

    [[pathway_clones]]                   # PATHWAY-CLONES in steering responses
    id = "cdn-c"
    base_id = "cdn-b"                    # copy cdn-b's URIs ...
    host = "c.example.com"               # ... with this host name (the port stays)
    params = { token = "abc" }           # ... and these query arguments
    weight = 1

``CADENZA_PATHWAYS`` holds the pathways in one line, comma separated, each
``ID[@WEIGHT]=BASE_URL``: ``cdn-a@2=https://a.example.com,cdn-b=https://b.example.com``.
Clones are configured in TOML only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from cadenza.manifests.steering import PATHWAY_ID_RE

MAX_PATHWAYS: Final = 16
MAX_WEIGHT: Final = 1000


class PathwayConfigError(ValueError):
    """A pathway list that cannot be used; the text says why."""


@dataclass(frozen=True, slots=True)
class PathwaySetting:
    id: str
    base_url: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class PathwayCloneSetting:
    """HLS/DASH pathway cloning: a new pathway whose URIs are those of ``base_id``
    with the host name replaced and query arguments added (``URI-REPLACEMENT``)."""

    id: str
    base_id: str
    host: str
    params: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    weight: int = 1


def _check_id(value: object, where: str) -> str:
    text = str(value)
    if not PATHWAY_ID_RE.match(text):
        raise PathwayConfigError(f"{where}: id {text!r} must be 1-64 of [A-Za-z0-9._-]")
    return text


def _check_url(value: object, where: str) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PathwayConfigError(f"{where}: base_url {text!r} is not an http(s) URL")
    if parts.username is not None:
        raise PathwayConfigError(f"{where}: base_url must not carry credentials")
    if parts.query or parts.fragment or '"' in text or any(c.isspace() for c in text):
        raise PathwayConfigError(f"{where}: base_url {text!r} must be a plain URL")
    return text.rstrip("/")


def _check_weight(value: object, where: str) -> int:
    try:
        weight = int(str(value))
    except ValueError:
        raise PathwayConfigError(f"{where}: weight {value!r} is not an integer") from None
    if not 1 <= weight <= MAX_WEIGHT:
        raise PathwayConfigError(f"{where}: weight {weight} is not in 1..{MAX_WEIGHT}")
    return weight


def _check_host(value: object, where: str) -> str:
    text = str(value)
    parts = urlsplit(f"//{text}")
    if not text or parts.hostname != text.lower() or parts.port is not None:
        raise PathwayConfigError(f"{where}: host {text!r} must be a bare host name")
    return text


def _table(
    entry: object, where: str, required: tuple[str, ...], optional: tuple[str, ...]
) -> Mapping[str, Any]:
    """A TOML table with every ``required`` key and no key outside ``optional``."""
    keys = f"{', '.join(required)} (optional: {', '.join(optional)})"
    if not isinstance(entry, Mapping):
        raise PathwayConfigError(f"{where}: expected a table with {keys}")
    if set(entry) - set(required) - set(optional) or not set(required) <= set(entry):
        raise PathwayConfigError(f"{where}: needs {keys}, and no other key")
    return entry


def parse_pathways(value: object) -> tuple[PathwaySetting, ...]:
    """From TOML (a list of tables), the environment (one string), or already parsed."""
    if isinstance(value, str):
        entries: list[object] = []
        for index, item in enumerate(part.strip() for part in value.split(",")):
            if not item:
                continue
            left, sep, url = item.partition("=")
            if not sep:
                raise PathwayConfigError(f"pathway {index + 1}: {item!r} is not ID[@WEIGHT]=URL")
            pathway_id, _, weight = left.partition("@")
            entries.append({"id": pathway_id, "base_url": url, "weight": weight or 1})
    elif isinstance(value, list | tuple):
        entries = list(value)
    else:
        raise PathwayConfigError("expected a list of pathway tables or ID[@WEIGHT]=URL,...")
    pathways: list[PathwaySetting] = []
    for index, entry in enumerate(entries):
        where = f"pathway {index + 1}"
        if isinstance(entry, PathwaySetting):
            pathways.append(entry)
            continue
        entry = _table(entry, where, ("id", "base_url"), ("weight",))
        pathways.append(
            PathwaySetting(
                id=_check_id(entry["id"], where),
                base_url=_check_url(entry["base_url"], where),
                weight=_check_weight(entry.get("weight", 1), where),
            )
        )
    _check_unique([p.id for p in pathways])
    if len(pathways) > MAX_PATHWAYS:
        raise PathwayConfigError(f"at most {MAX_PATHWAYS} pathways")
    return tuple(pathways)


def parse_clones(value: object) -> tuple[PathwayCloneSetting, ...]:
    if not isinstance(value, list | tuple):
        raise PathwayConfigError("pathway_clones: expected a list of tables (TOML only)")
    clones: list[PathwayCloneSetting] = []
    for index, entry in enumerate(value):
        where = f"pathway clone {index + 1}"
        if isinstance(entry, PathwayCloneSetting):
            clones.append(entry)
            continue
        entry = _table(entry, where, ("id", "base_id", "host"), ("params", "weight"))
        params = entry.get("params", {})
        if not isinstance(params, Mapping):
            raise PathwayConfigError(f"{where}: params must be a table of strings")
        clones.append(
            PathwayCloneSetting(
                id=_check_id(entry["id"], where),
                base_id=_check_id(entry["base_id"], where),
                host=_check_host(entry["host"], where),
                params=tuple(sorted((str(k), str(v)) for k, v in params.items())),
                weight=_check_weight(entry.get("weight", 1), where),
            )
        )
    _check_unique([c.id for c in clones])
    return tuple(clones)


def _check_unique(ids: list[str]) -> None:
    seen: set[str] = set()
    for pathway_id in ids:
        if pathway_id in seen:
            raise PathwayConfigError(f"pathway id {pathway_id!r} is listed twice")
        seen.add(pathway_id)


def check_steering(
    pathways: tuple[PathwaySetting, ...],
    clones: tuple[PathwayCloneSetting, ...],
    default: str | None,
) -> None:
    """The cross-field rules: clones copy a configured pathway and never reuse
    its id, and the default pathway is configured."""
    ids = {p.id for p in pathways}
    if clones and not pathways:
        raise PathwayConfigError("pathway_clones need pathways to copy")
    for clone in clones:
        if clone.base_id not in ids:
            raise PathwayConfigError(f"pathway clone {clone.id}: no pathway {clone.base_id!r}")
        if clone.id in ids:
            raise PathwayConfigError(f"pathway clone {clone.id}: the id is a pathway's")
    if default is not None and default not in ids:
        raise PathwayConfigError(f"content_steering_default {default!r} is not a pathway")


def clone_base_url(base_url: str, host: str) -> str:
    """Where a clone's track folders are: the base pathway's URL with the host
    name replaced.  The port and path stay, as hls.js applies ``HOST``; dash.js
    drops the port, so clone only pathways on their scheme's default port."""
    parts = urlsplit(base_url)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
