"""Content steering in the manifests: pure types, no I/O.

A *pathway* (HLS ``PATHWAY-ID``, DASH ``serviceLocation``) is one way to the
media, usually one CDN, named by an id and reached at a base URL under which
the track folders sit (``<base_url>/<track_id>/...``).  With a
:class:`SteeringConfig` the renderers write:

- HLS (RFC 8216bis 4.4.6.6): ``#EXT-X-CONTENT-STEERING:SERVER-URI=...,
  PATHWAY-ID=<default>`` and every variant once per pathway, tagged with its
  ``PATHWAY-ID`` and a ``STABLE-VARIANT-ID`` (the rendition id, the same on
  every pathway), with an absolute URI on that pathway's base URL.
- DASH (ISO/IEC 23009-1 5.3.1.2 / DASH-IF content steering): one MPD-level
  ``<BaseURL serviceLocation="id">`` per pathway and
  ``<ContentSteering defaultServiceLocation=... queryBeforeStart=...>``
  holding the steering server's URI.

The server URI must be absolute: dash.js requests the ``ContentSteering``
text as it is, without resolving it against the MPD's URL, and the steering
server must stay reachable when a CDN in front of the manifests is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

# RFC 8216bis: a PATHWAY-ID "MUST consist only of the characters [a-z], [A-Z],
# [0-9], '.', '-' and '_'"; DASH lists service locations separated by spaces.
PATHWAY_ID_RE: Final = re.compile(r"\A[A-Za-z0-9._-]{1,64}\Z")


class InvalidSteeringError(ValueError):
    """A steering configuration the renderers cannot write."""


@dataclass(frozen=True, slots=True)
class Pathway:
    """One pathway: its id and the absolute base URL the track folders are under."""

    id: str
    base_url: str

    def track_url(self, track_id: str) -> str:
        """The track folder on this pathway, with a trailing slash."""
        return f"{self.base_url.rstrip('/')}/{quote(track_id, safe='')}/"


@dataclass(frozen=True, slots=True)
class SteeringConfig:
    """What the manifests say about steering: where the steering server is,
    the pathways in the order they are listed, and the one to start on."""

    server_uri: str
    pathways: tuple[Pathway, ...]
    default: str
    query_before_start: bool = False

    def __post_init__(self) -> None:
        if not self.pathways:
            raise InvalidSteeringError("content steering needs at least one pathway")
        ids = [p.id for p in self.pathways]
        for pathway_id in ids:
            if not PATHWAY_ID_RE.match(pathway_id):
                raise InvalidSteeringError(f"pathway id {pathway_id!r}: use 1-64 of [A-Za-z0-9._-]")
        if len(set(ids)) != len(ids):
            raise InvalidSteeringError(f"pathway ids repeat: {ids}")
        if self.default not in ids:
            raise InvalidSteeringError(f"default pathway {self.default!r} is not one of {ids}")
        if not self.server_uri.startswith(("http://", "https://")):
            raise InvalidSteeringError(f"steering server URI {self.server_uri!r} is not absolute")
        for pathway in self.pathways:
            if not pathway.base_url.startswith(("http://", "https://")):
                raise InvalidSteeringError(
                    f"pathway {pathway.id}: base URL {pathway.base_url!r} is not absolute"
                )
        for text in (self.server_uri, *(p.base_url for p in self.pathways)):
            if '"' in text or any(c.isspace() for c in text):
                raise InvalidSteeringError(f"URI {text!r} has characters manifests cannot carry")
