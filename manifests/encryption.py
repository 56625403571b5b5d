"""A rendition's encryption in ``presentation.json`` and in the manifests' key URLs.

The document carries ``"encryption": {"scheme": "cbcs", "key_id": "<32 hex>"}`` (plus
``"iv"`` for an explicit AES-128 IV) on an encrypted rendition only, so a clear
presentation's document is unchanged.  The key itself is never written: the origin
looks it up in the key store by ``key_id``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from typing import Final

from lxml import etree

from cadenza.manifests.errors import InvalidEncryptionError, InvalidPresentationError
from cadenza.manifests.model import Encryption, EncryptionScheme, Rendition

__all__ = [
    "CLEARKEY_LICENCE_PATH",
    "KEY_PATH_PREFIX",
    "add_content_protection",
    "clearkey_licence_url",
    "dash_namespaces",
    "dash_renditions",
    "encryption_from_dict",
    "encryption_to_dict",
    "has_cbcs",
    "hls_key_tag",
    "key_id_b64url",
    "key_id_from_b64url",
    "key_id_uuid",
    "key_url",
    "presentation_key_ids",
    "shared_key_id",
]

# The origin's key delivery, relative to its root (rendered into the manifests).
CLEARKEY_LICENCE_PATH: Final = "/v1/licence/clearkey"
KEY_PATH_PREFIX: Final = "/v1/keys/"


def encryption_to_dict(encryption: Encryption) -> dict[str, object]:
    """The ``encryption`` member of a rendition in ``presentation.json``."""
    doc: dict[str, object] = {"scheme": encryption.scheme.value, "key_id": encryption.key_id}
    if encryption.iv is not None:
        doc["iv"] = encryption.iv
    return doc


def encryption_from_dict(value: object, field: str) -> Encryption | None:
    """Read the ``encryption`` member back (None when absent: clear media)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidPresentationError(field, "expected an object")
    scheme_raw = value.get("scheme")
    try:
        scheme = EncryptionScheme(str(scheme_raw))
    except ValueError:
        allowed = ", ".join(s.value for s in EncryptionScheme)
        raise InvalidPresentationError(f"{field}.scheme", f"expected one of {allowed}") from None
    key_id = value.get("key_id")
    iv = value.get("iv")
    if not isinstance(key_id, str) or (iv is not None and not isinstance(iv, str)):
        raise InvalidPresentationError(field, "key_id and iv must be hex strings")
    try:
        return Encryption(scheme=scheme, key_id=key_id, iv=iv)
    except InvalidEncryptionError as exc:
        raise InvalidPresentationError(f"{field}.{exc.field}", exc.reason) from None


def key_id_uuid(key_id: str) -> str:
    """The key id in the UUID form ``cenc:default_KID`` takes (ISO/IEC 23001-7 11.2)."""
    return str(uuid.UUID(hex=key_id))


def key_id_b64url(key_id: str) -> str:
    """The key id as a W3C EME ClearKey ``kid``: base64url without padding (EME 9.1.3)."""
    return base64.urlsafe_b64encode(bytes.fromhex(key_id)).rstrip(b"=").decode("ascii")


def key_id_from_b64url(kid: str) -> str | None:
    """A ClearKey ``kid`` back to 32 hex digits; None when it is not 16 base64url bytes."""
    if not isinstance(kid, str) or len(kid) != 22:
        return None
    try:
        raw = base64.urlsafe_b64decode(kid + "==")
    except ValueError:
        return None
    if len(raw) != 16 or key_id_b64url(raw.hex()) != kid:
        return None
    return raw.hex()


def key_url(key_id: str) -> str:
    """The AES-128 key's URL at the origin (``/v1/keys/<key id>``)."""
    return f"{KEY_PATH_PREFIX}{key_id}"


def presentation_key_ids(renditions: tuple[Rendition, ...]) -> frozenset[str]:
    """Every key id the renditions are encrypted with."""
    return frozenset(r.encryption.key_id for r in renditions if r.encryption is not None)


# -- HLS (RFC 8216 4.4.4.4) ----------------------------------------------------

CLEARKEY_KEYFORMAT: Final = "org.w3.clearkey"
# From a media playlist (``<track>/<rendition>/playlist.m3u8``, or a group's at the
# same depth) to the origin's root: a signed URL's ``/t/<token>/`` prefix is kept by
# plain URL resolution, so the static playlist serves signed and unsigned viewers.
_PLAYLIST_TO_ROOT: Final = "../../"


def hls_key_tag(encryption: Encryption) -> str:
    """The ``EXT-X-KEY`` tag of an encrypted media playlist, placed before its
    ``EXT-X-MAP`` so it applies to the init section and every segment (4.4.4.4).

    ``cbcs``: ``METHOD=SAMPLE-AES`` (fMP4 with CENC ``cbcs``), ``KEYFORMAT`` the W3C
    ClearKey system as hls.js names it, the key id both as ``KEYID`` and as a
    ``data:`` URI (hls.js takes the key id from either; the licence itself comes from
    the ClearKey licence URL the page configures).  ``aes-128``: ``METHOD=AES-128``
    with the key's URL at the origin, relative to the playlist, and ``IV`` when the
    IV is explicit (else the media sequence number is the IV, 5.2).
    """
    if encryption.scheme is EncryptionScheme.AES_128:
        iv = "" if encryption.iv is None else f",IV=0x{encryption.iv}"
        uri = _PLAYLIST_TO_ROOT + key_url(encryption.key_id).lstrip("/")
        return f'#EXT-X-KEY:METHOD=AES-128,URI="{uri}"{iv}'
    kid = base64.b64encode(bytes.fromhex(encryption.key_id)).decode("ascii")
    return (
        f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="data:text/plain;base64,{kid}",'
        f"KEYID=0x{encryption.key_id},"
        f'KEYFORMAT="{CLEARKEY_KEYFORMAT}",KEYFORMATVERSIONS="1"'
    )


# -- DASH (ISO/IEC 23009-1 5.8.4.1, ISO/IEC 23001-7 11.2, DASH-IF IOP 7.6.2.4) -----

MP4_PROTECTION_SCHEME: Final = "urn:mpeg:dash:mp4protection:2011"
# The DASH-IF ClearKey system id in MPDs (dash.js matches it); the W3C common system
# id 1077efec-c0b2-4d02-ace3-3c1e52e2fb4b is the ``pssh`` box's, not the MPD's.
CLEARKEY_SCHEME: Final = "urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e"
CENC_NS: Final = "urn:mpeg:cenc:2013"
DASHIF_NS: Final = "https://dashif.org/CPS"


def has_cbcs(renditions: tuple[Rendition, ...]) -> bool:
    """Whether an MPD of these renditions carries ``ContentProtection`` (one is ``cbcs``)."""
    return any(_cbcs(r) for r in renditions)


def clearkey_licence_url(root_url: str) -> str:
    """The absolute ClearKey licence URL below ``root_url``, the origin's root as a
    viewer reached it (``https://host[:port]``, plus a signed URL's ``/t/<token>``)."""
    return root_url.rstrip("/") + CLEARKEY_LICENCE_PATH


def dash_namespaces(renditions: tuple[Rendition, ...]) -> dict[str, str]:
    """The prefixes an MPD of these renditions declares besides its own: ``cenc`` and
    ``dashif`` when one is ``cbcs``-encrypted, none otherwise (a clear MPD is unchanged).
    The ``dashif`` prefix itself matters: dash.js 5.2.1 takes a ``Laurl`` element only
    under the prefix ``dashif``, ``clearkey`` or ``ck``."""
    if has_cbcs(renditions):
        return {"cenc": CENC_NS, "dashif": DASHIF_NS}
    return {}


def dash_renditions(renditions: tuple[Rendition, ...]) -> tuple[Rendition, ...]:
    """The renditions an MPD lists: ``aes-128`` is HLS only (RFC 8216), so left out."""
    return tuple(
        r
        for r in renditions
        if r.encryption is None or r.encryption.scheme is not EncryptionScheme.AES_128
    )


def _cbcs(r: Rendition) -> bool:
    return r.encryption is not None and r.encryption.scheme is EncryptionScheme.CBCS


def shared_key_id(renditions: list[Rendition]) -> str | None:
    """The one key id every rendition of an AdaptationSet is ``cbcs``-encrypted with, so
    the set carries the ``ContentProtection``; None when they are clear, or their keys
    differ (each Representation then carries its own)."""
    key_ids = {r.encryption.key_id for r in renditions if r.encryption is not None}
    if len(key_ids) == 1 and all(_cbcs(r) for r in renditions):
        return key_ids.pop()
    return None


def add_content_protection(
    parent: etree._Element, dash_ns: str, key_id: str, licence_url: str | None
) -> None:
    """The two ``ContentProtection`` descriptors of a ``cbcs`` set or Representation:
    the common scheme with ``cenc:default_KID`` (ISO/IEC 23001-7 11.2), then the
    ClearKey system, with its licence URL as ``dashif:Laurl`` (DASH-IF IOP 7.6.2.4)
    when one is given.

    Only an absolute URL is worth writing: players take ``Laurl`` as it stands, never
    resolved against the MPD (Shaka 5.2.12 even prefers it over the page's own
    ClearKey server), so a relative one would be asked of the page's host."""
    common = etree.SubElement(parent, f"{{{dash_ns}}}ContentProtection")
    common.set("schemeIdUri", MP4_PROTECTION_SCHEME)
    common.set("value", EncryptionScheme.CBCS.value)
    common.set(f"{{{CENC_NS}}}default_KID", key_id_uuid(key_id))
    clearkey = etree.SubElement(parent, f"{{{dash_ns}}}ContentProtection")
    clearkey.set("schemeIdUri", CLEARKEY_SCHEME)
    clearkey.set("value", "ClearKey1.0")
    if licence_url is not None:
        etree.SubElement(clearkey, f"{{{DASHIF_NS}}}Laurl").text = licence_url
