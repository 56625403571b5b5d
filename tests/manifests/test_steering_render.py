"""Content steering in the manifests: ``EXT-X-CONTENT-STEERING`` with every
variant once per pathway (HLS), MPD-level ``BaseURL serviceLocation`` and
``ContentSteering`` (DASH), the MPD still valid against the schema, and the
output without steering unchanged."""

from __future__ import annotations

import pytest
from lxml import etree

from cadenza.manifests.dash import NS, render_mpd
from cadenza.manifests.dash_parse import parse_mpd
from cadenza.manifests.hls import parse_attributes, parse_master, render_master
from cadenza.manifests.model import SegmentLayout
from cadenza.manifests.steering import InvalidSteeringError, Pathway, SteeringConfig
from tests.manifests.test_rendering import GOLDEN, SCHEMA, make_presentation

SERVER = "https://steer.example.com/v1/steering/golden-track?protocol=hls"
STEERING = SteeringConfig(
    server_uri=SERVER,
    pathways=(
        Pathway("cdn-a", "https://a.example.com"),
        Pathway("cdn-b", "https://b.example.com/media/"),
    ),
    default="cdn-b",
)


def test_master_without_steering_is_the_golden_file() -> None:
    presentation = make_presentation()
    assert render_master(presentation, None) == (GOLDEN / "master.m3u8").read_text()
    assert render_mpd(presentation, None) == (GOLDEN / "manifest.mpd").read_text()


def test_master_names_the_steering_server_and_the_default_pathway() -> None:
    text = render_master(make_presentation(), STEERING)
    lines = text.splitlines()
    tags = [line for line in lines if line.startswith("#EXT-X-CONTENT-STEERING:")]
    assert len(tags) == 1
    assert parse_attributes(tags[0].split(":", 1)[1]) == {
        "SERVER-URI": SERVER,
        "PATHWAY-ID": "cdn-b",
    }
    # Before the first variant: a multivariant playlist tag.
    first_variant = next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF"))
    assert lines.index(tags[0]) < first_variant


def test_master_repeats_every_variant_per_pathway_with_absolute_uris() -> None:
    presentation = make_presentation()
    variants = parse_master(render_master(presentation, STEERING))
    ids = [r.id for r in presentation.renditions]
    assert len(variants) == 2 * len(ids)
    by_pathway: dict[str | None, list[str]] = {}
    for variant in variants:
        by_pathway.setdefault(variant.pathway_id, []).append(variant.uri)
    assert by_pathway == {
        "cdn-a": [f"https://a.example.com/golden-track/{i}/playlist.m3u8" for i in ids],
        "cdn-b": [f"https://b.example.com/media/golden-track/{i}/playlist.m3u8" for i in ids],
    }
    plain = parse_master(render_master(presentation))
    for pathway in ("cdn-a", "cdn-b"):
        same = [v for v in variants if v.pathway_id == pathway]
        assert [(v.bandwidth_bps, v.average_bandwidth_bps, v.codecs) for v in same] == [
            (v.bandwidth_bps, v.average_bandwidth_bps, v.codecs) for v in plain
        ]


def test_master_gives_each_rendition_one_stable_variant_id_on_every_pathway() -> None:
    text = render_master(make_presentation(), STEERING)
    infs = [
        parse_attributes(line.split(":", 1)[1])
        for line in text.splitlines()
        if line.startswith("#EXT-X-STREAM-INF:")
    ]
    stable = {(a["PATHWAY-ID"], a["STABLE-VARIANT-ID"]) for a in infs}
    assert len(stable) == len(infs)
    ids_a = [a["STABLE-VARIANT-ID"] for a in infs if a["PATHWAY-ID"] == "cdn-a"]
    ids_b = [a["STABLE-VARIANT-ID"] for a in infs if a["PATHWAY-ID"] == "cdn-b"]
    assert ids_a == ids_b


def test_master_with_steering_parses_with_the_m3u8_library() -> None:
    m3u8 = pytest.importorskip("m3u8")
    playlist = m3u8.loads(render_master(make_presentation(), STEERING))
    assert playlist.is_variant
    assert len(playlist.playlists) == 2 * len(make_presentation().renditions)


def _mpd(layout: SegmentLayout = SegmentLayout.SEPARATE, **kwargs: object) -> etree._Element:
    steering = SteeringConfig(**{**STEERING_KW, **kwargs})  # type: ignore[arg-type]
    return etree.fromstring(render_mpd(make_presentation(layout), steering).encode())


STEERING_KW: dict[str, object] = {
    "server_uri": "https://steer.example.com/v1/steering/golden-track?protocol=dash&x=1",
    "pathways": STEERING.pathways,
    "default": "cdn-a",
}


def test_mpd_has_a_base_url_per_pathway_and_a_content_steering_element() -> None:
    root = _mpd(query_before_start=True)
    q = f"{{{NS}}}"
    bases = root.findall(f"{q}BaseURL")
    assert [(b.get("serviceLocation"), b.text) for b in bases] == [
        ("cdn-a", "https://a.example.com/golden-track/"),
        ("cdn-b", "https://b.example.com/media/golden-track/"),
    ]
    (steering,) = root.findall(f"{q}ContentSteering")
    assert steering.text == STEERING_KW["server_uri"]
    assert steering.get("defaultServiceLocation") == "cdn-a"
    assert steering.get("queryBeforeStart") == "true"
    # Schema order: BaseURLs, ContentSteering, then the Period.
    tags = [child.tag.removeprefix(q) for child in root]
    assert tags == ["BaseURL", "BaseURL", "ContentSteering", "Period"]
    assert _mpd().find(f"{q}ContentSteering").get("queryBeforeStart") == "false"  # type: ignore[union-attr]


def test_mpd_representations_keep_relative_base_urls() -> None:
    """Each Representation's BaseURL stays relative, so it resolves on whichever
    MPD-level BaseURL (pathway) the player picked."""
    root = _mpd()
    q = f"{{{NS}}}"
    reps = root.findall(f"{q}Period/{q}AdaptationSet/{q}Representation")
    assert reps
    for rep in reps:
        base = rep.find(f"{q}BaseURL")
        assert base is not None and base.text is not None
        assert not base.text.startswith(("http:", "https:", "/"))


@pytest.mark.parametrize("layout", list(SegmentLayout))
def test_mpd_with_steering_validates_against_the_schema(layout: SegmentLayout) -> None:
    document = _mpd(layout)
    assert SCHEMA.validate(document), SCHEMA.error_log


def test_mpd_with_steering_parses_back() -> None:
    presentation = make_presentation()
    plain = parse_mpd(render_mpd(presentation))
    steered = parse_mpd(render_mpd(presentation, STEERING))
    assert steered == plain


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pathways": ()}, "at least one"),
        ({"default": "cdn-z"}, "default pathway"),
        ({"pathways": (Pathway("cdn a", "https://a"),), "default": "cdn a"}, "pathway id"),
        ({"pathways": (Pathway("x", "https://a"), Pathway("x", "https://b"))}, "repeat"),
        ({"server_uri": "/v1/steering/t"}, "not absolute"),
        ({"pathways": (Pathway("cdn-a", "a.example.com"),)}, "not absolute"),
        ({"server_uri": 'https://s/"x'}, "cannot carry"),
    ],
)
def test_invalid_steering_is_refused(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "server_uri": SERVER,
        "pathways": STEERING.pathways,
        "default": "cdn-a",
        **change,
    }
    if "default" not in change and fields["pathways"]:
        fields["default"] = fields["pathways"][0].id  # type: ignore[index]
    with pytest.raises(InvalidSteeringError, match=message):
        SteeringConfig(**fields)  # type: ignore[arg-type]


def test_track_ids_are_escaped_in_pathway_urls() -> None:
    assert Pathway("a", "https://a.example.com/").track_url("x y") == (
        "https://a.example.com/x%20y/"
    )
