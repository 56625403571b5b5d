"""Encrypted renditions in the model, presentation.json, HLS and DASH."""

from __future__ import annotations

import base64
import dataclasses
import json

import m3u8
import pytest
from lxml import etree

from cadenza.manifests.dash import render_group_mpd, render_mpd
from cadenza.manifests.encryption import (
    CLEARKEY_SCHEME,
    DASHIF_NS,
    MP4_PROTECTION_SCHEME,
    key_id_b64url,
    key_id_from_b64url,
    presentation_key_ids,
)
from cadenza.manifests.errors import InvalidEncryptionError, InvalidPresentationError
from cadenza.manifests.hls import render_group_playlist, render_master, render_media_playlist
from cadenza.manifests.jsonio import (
    presentation_from_dict,
    presentation_from_json,
    presentation_to_dict,
    presentation_to_json,
)
from cadenza.manifests.model import Encryption, EncryptionScheme, Presentation
from tests.manifests.test_rendering import SCHEMA, make_presentation

KID = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
MPD_NS = {"d": "urn:mpeg:dash:schema:mpd:2011", "cenc": "urn:mpeg:cenc:2013", "dashif": DASHIF_NS}


def encrypted(
    p: Presentation, scheme: EncryptionScheme, key_for: dict[str, str] | None = None
) -> Presentation:
    """Every rendition encrypted with ``scheme``, by KID unless ``key_for`` names one."""
    key_for = key_for or {}
    renditions = tuple(
        dataclasses.replace(r, encryption=Encryption(scheme, key_for.get(r.id, KID)))
        for r in p.renditions
    )
    return dataclasses.replace(p, renditions=renditions, groups=())


def test_encryption_validates_key_id_and_iv() -> None:
    with pytest.raises(InvalidEncryptionError) as caught:
        Encryption(EncryptionScheme.CBCS, KID.upper())
    assert caught.value.field == "key_id"
    with pytest.raises(InvalidEncryptionError) as caught:
        Encryption(EncryptionScheme.CBCS, KID, iv=OTHER)
    assert caught.value.field == "iv"
    with pytest.raises(InvalidEncryptionError):
        Encryption(EncryptionScheme.AES_128, KID, iv="00" * 15)
    assert Encryption(EncryptionScheme.AES_128, KID, iv=OTHER).iv == OTHER


def test_presentation_json_round_trips_encryption_and_leaves_clear_documents_alone() -> None:
    clear = make_presentation()
    assert "encryption" not in presentation_to_json(clear)
    p = encrypted(clear, EncryptionScheme.CBCS)
    p = dataclasses.replace(
        p,
        renditions=(
            dataclasses.replace(
                p.renditions[0], encryption=Encryption(EncryptionScheme.AES_128, OTHER, iv=KID)
            ),
            *p.renditions[1:],
        ),
        groups=(),  # derived again: a rung under another key shares no init (groups.py)
    )
    assert all(
        p.renditions[0].id not in g.rendition_ids or len(g.rendition_ids) == 1 for g in p.groups
    )
    text = presentation_to_json(p)
    assert presentation_from_json(text) == p
    first = json.loads(text)["renditions"][0]["encryption"]
    assert first == {"scheme": "aes-128", "key_id": OTHER, "iv": KID}
    assert presentation_key_ids(p.renditions) == {KID, OTHER}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"scheme": "cenc", "key_id": KID}, "renditions[0].encryption.scheme"),
        ({"scheme": "cbcs", "key_id": "xyz"}, "renditions[0].encryption.key_id"),
        ({"scheme": "cbcs"}, "renditions[0].encryption"),
        ("cbcs", "renditions[0].encryption"),
    ],
)
def test_malformed_encryption_names_the_field(value: object, field: str) -> None:
    doc = presentation_to_dict(make_presentation())
    doc["renditions"][0]["encryption"] = value  # type: ignore[index]
    with pytest.raises(InvalidPresentationError) as caught:
        presentation_from_dict(doc)
    assert caught.value.field == field


def test_cbcs_playlist_has_a_clearkey_sample_aes_key_before_the_map() -> None:
    p = encrypted(make_presentation(), EncryptionScheme.CBCS)
    text = render_media_playlist(p.renditions[0])
    lines = text.splitlines()
    key_line = next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-KEY:"))
    map_line = next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-MAP:"))
    assert key_line < map_line
    parsed = m3u8.loads(text)
    key = parsed.keys[-1]
    assert key.method == "SAMPLE-AES"
    assert key.keyformat == "org.w3.clearkey"
    assert key.keyformatversions == "1"
    assert key.uri == "data:text/plain;base64," + base64.b64encode(bytes.fromhex(KID)).decode()
    assert f"KEYID=0x{KID}" in lines[key_line]


def test_aes128_playlist_names_the_key_url_relative_to_the_root_and_the_iv() -> None:
    p = encrypted(make_presentation(), EncryptionScheme.AES_128)
    rendition = p.renditions[0]
    implicit = m3u8.loads(render_media_playlist(rendition)).keys[-1]
    assert implicit.method == "AES-128"
    assert implicit.uri == f"../../v1/keys/{KID}"
    assert implicit.iv is None  # the media sequence number is the IV (RFC 8216 5.2)
    explicit = dataclasses.replace(
        rendition, encryption=Encryption(EncryptionScheme.AES_128, KID, iv=OTHER)
    )
    assert m3u8.loads(render_media_playlist(explicit)).keys[-1].iv == f"0x{OTHER}"


def test_group_playlist_and_clear_playlists() -> None:
    p = encrypted(make_presentation(), EncryptionScheme.CBCS)
    assert "#EXT-X-KEY:METHOD=SAMPLE-AES" in render_group_playlist(p, p.groups[0].id)
    assert "EXT-X-KEY" not in render_media_playlist(make_presentation().renditions[0])
    # The multivariant playlist lists every rendition, AES-128 ones included.
    assert render_master(p).count("#EXT-X-STREAM-INF") == len(p.renditions)


def test_cbcs_mpd_validates_and_carries_both_content_protections() -> None:
    p = encrypted(make_presentation(), EncryptionScheme.CBCS)
    text = render_mpd(p, licence_url="/t/tok/v1/licence/clearkey")
    doc = etree.fromstring(text.encode())
    SCHEMA.assertValid(doc)
    sets = doc.findall(".//d:AdaptationSet", MPD_NS)
    assert sets
    for adaptation in sets:
        first, second = adaptation.findall("d:ContentProtection", MPD_NS)
        assert first.get("schemeIdUri") == MP4_PROTECTION_SCHEME
        assert first.get("value") == "cbcs"
        assert (
            first.get("{urn:mpeg:cenc:2013}default_KID") == "01234567-89ab-cdef-0123-456789abcdef"
        )
        assert second.get("schemeIdUri") == CLEARKEY_SCHEME
        assert second.findtext("dashif:Laurl", namespaces=MPD_NS) == "/t/tok/v1/licence/clearkey"
        # ContentProtection precedes the SupplementalProperty descriptors (schema order).
        children = [etree.QName(c).localname for c in adaptation]
        assert children.index("ContentProtection") < children.index("SupplementalProperty")
    clear = render_mpd(make_presentation())
    assert "ContentProtection" not in clear and "cenc" not in clear
    # Without an absolute licence URL none is written: players would ask the page's host.
    unlinked = etree.fromstring(render_mpd(p).encode())
    SCHEMA.assertValid(unlinked)
    assert unlinked.findall(".//d:ContentProtection", MPD_NS)
    assert not unlinked.findall(".//dashif:Laurl", MPD_NS)


def test_per_rendition_keys_go_on_each_representation() -> None:
    base = make_presentation()
    keys = {r.id: (KID if i % 2 else OTHER) for i, r in enumerate(base.renditions)}
    p = encrypted(base, EncryptionScheme.CBCS, keys)
    doc = etree.fromstring(render_mpd(p).encode())
    SCHEMA.assertValid(doc)
    on_representations = 0
    for adaptation in doc.findall(".//d:AdaptationSet", MPD_NS):
        for rep in adaptation.findall("d:Representation", MPD_NS):
            own = rep.find("d:ContentProtection", MPD_NS)
            on_representations += own is not None
            found = own if own is not None else adaptation.find("d:ContentProtection", MPD_NS)
            assert found is not None
            kid = str(found.get("{urn:mpeg:cenc:2013}default_KID"))
            assert kid.replace("-", "") == keys[str(rep.get("id"))]
    assert on_representations >= 4  # the AAC and Opus sets mix keys


def test_aes128_renditions_are_left_out_of_the_mpd() -> None:
    base = make_presentation()
    aes = {r.id for r in base.renditions if r.codec.value == "aac"}
    renditions = tuple(
        dataclasses.replace(
            r,
            encryption=Encryption(
                EncryptionScheme.AES_128 if r.id in aes else EncryptionScheme.CBCS, KID
            ),
        )
        for r in base.renditions
    )
    p = dataclasses.replace(base, renditions=renditions, groups=())
    doc = etree.fromstring(render_mpd(p).encode())
    SCHEMA.assertValid(doc)
    listed = {rep.get("id") for rep in doc.findall(".//d:Representation", MPD_NS)}
    assert listed == {r.id for r in base.renditions} - aes


def test_group_mpd_carries_the_groups_key() -> None:
    p = encrypted(make_presentation(), EncryptionScheme.CBCS)
    doc = etree.fromstring(render_group_mpd(p).encode())
    SCHEMA.assertValid(doc)
    assert doc.findall(".//d:AdaptationSet/d:ContentProtection", MPD_NS)


def test_clearkey_kid_encoding_round_trips_and_refuses_garbage() -> None:
    kid = key_id_b64url(KID)
    assert "=" not in kid and len(kid) == 22
    assert key_id_from_b64url(kid) == KID
    for bad in ("", "AAAA", kid + "A", kid[:-1] + "=", "!" * 22, 5):
        assert key_id_from_b64url(bad) is None  # type: ignore[arg-type]
