"""Where just-in-time sources come from: an ``s3://`` prefix (a real S3 API: moto in
server mode), each version downloaded once into a bounded local cache; and the command
line, which without ``--sources`` runs the origin as before, PyAV never loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from cadenza.origin.keys import CACHE
from cadenza.store.api import Provenance
from tests.conftest import MakeInput, Moto
from tests.origin.conftest import BUCKET
from tests.origin.jit_fixtures import MakeJit, body_of, jit_store, make_jit, sources_with

__all__ = ["make_jit"]  # the fixture


@pytest.mark.asyncio
async def test_s3_sources_are_downloaded_once_and_served(
    make_jit: MakeJit, make_input: MakeInput, moto: Moto, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    source = make_input("flac", 44100, 2, 6.0, name="from-s3")
    s3.put_object(Bucket=BUCKET, Key="sources/from-s3.flac", Body=source.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="sources/notes.txt", Body=b"not a source")
    s3.put_object(Bucket=BUCKET, Key="sources/deeper/other.flac", Body=source.read_bytes())
    options = {
        "s3_endpoint_url": moto.url,
        "jit_source_cache_dir": str(tmp_path / "cache"),
        "jit_listing_ttl_s": 0,
    }
    url = f"s3://{BUCKET}/sources"
    client = await make_jit(tmp_path / "root", url, **options)
    assert (await (await client.get("/v1/tracks")).json()) == {"tracks": ["from-s3"]}
    await body_of(client, "/from-s3/master.m3u8")
    first = await body_of(client, "/from-s3/aac-128k/seg-00001.m4s")
    await body_of(client, "/from-s3/aac-128k/seg-00002.m4s")
    sources = jit_store(client).planner.sources
    assert getattr(sources, "downloads", None) == 1
    [copy] = (tmp_path / "cache").iterdir()
    assert copy.read_bytes() == source.read_bytes()
    # Another process with the same cache: no download, the same bytes.
    again = await make_jit(tmp_path / "root2", url, **options)
    assert await body_of(again, "/from-s3/aac-128k/seg-00001.m4s") == first
    assert getattr(jit_store(again).planner.sources, "downloads", None) == 0
    assert (await again.get("/other/master.m3u8")).status == 404


@pytest.mark.asyncio
async def test_an_s3_root_gets_its_write_back_below_its_jit_prefix(
    make_jit: MakeJit, make_input: MakeInput, moto: Moto, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    source = make_input("flac", 44100, 2, 6.0, name="on-s3-root")
    sources = sources_with(tmp_path / "src", source)
    root = f"s3://{BUCKET}/jit-root"
    client = await make_jit(root, sources, s3_endpoint_url=moto.url, storage_timeout_s=5.0)
    built = await body_of(client, "/on-s3-root/aac-128k/seg-00002.m4s")
    await jit_store(client).drain()
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="jit-root/")
    keys = sorted(item["Key"] for item in listed.get("Contents", []))
    assert "jit-root/.jit/on-s3-root/lineage.json" in keys
    [segment] = [k for k in keys if k.endswith("/aac-128k/seg-00002.m4s")]
    assert segment.startswith("jit-root/.jit/on-s3-root/")
    assert s3.get_object(Bucket=BUCKET, Key=segment)["Body"].read() == built
    again = await make_jit(root, sources, s3_endpoint_url=moto.url, storage_timeout_s=5.0)
    assert await body_of(again, "/on-s3-root/aac-128k/seg-00002.m4s") == built
    cached = again.app[CACHE].peek("on-s3-root/aac-128k/seg-00002.m4s")
    assert cached is not None and cached.provenance is Provenance.JIT_STORED
    assert jit_store(again).events.builds.get(("segment", "ok"), 0) == 0
    assert (await (await again.get("/v1/tracks")).json()) == {"tracks": ["on-s3-root"]}


@pytest.mark.asyncio
async def test_the_download_cache_is_bounded(
    make_jit: MakeJit, make_input: MakeInput, moto: Moto, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    one = make_input("flac", 44100, 2, 2.0, name="one")
    two = make_input("flac", 44100, 2, 3.0, name="two")
    for path in (one, two):
        s3.put_object(Bucket=BUCKET, Key=f"bounded/{path.name}", Body=path.read_bytes())
    client = await make_jit(
        tmp_path / "root",
        f"s3://{BUCKET}/bounded",
        s3_endpoint_url=moto.url,
        jit_source_cache_dir=str(tmp_path / "cache"),
        jit_source_cache_max_bytes=max(one.stat().st_size, two.stat().st_size) + 1,
    )
    await body_of(client, "/one/master.m3u8")
    await body_of(client, "/two/master.m3u8")
    kept = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(kept) == 1 and kept[0].endswith(".flac")


def test_serve_without_sources_never_loads_pyav() -> None:
    code = (
        "import sys\n"
        "from cadenza.cli import build_parser\n"
        "args = build_parser(['serve', '/nonexistent']).parse_args(['serve', '/nonexistent'])\n"
        "from cadenza.serve_command import jit_options\n"
        "assert not jit_options(args, {}).enabled\n"
        "assert 'av' not in sys.modules, 'PyAV loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_serve_refuses_a_sources_folder_that_is_not_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cadenza.cli", "serve", str(tmp_path), "--sources",
         str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "is not a directory" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "cadenza.cli", "serve", str(tmp_path), "--sources",
         str(tmp_path), "--jit-workers", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "jit_workers" in bad.stderr and "positive" in bad.stderr
