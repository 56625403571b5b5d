"""``cadenza live --out s3://…``: the live track published to S3 (moto in server mode
behind the logging, fault-injecting proxy of tests/packager/conftest.py), and
``cadenza serve s3://…`` serving it while the ingest runs."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadenza.cli import main
from cadenza.manifests.live import LIVE_STATE_NAME, LivePresentation
from cadenza.manifests.live_json import live_from_json
from cadenza.manifests.model import MASTER_NAME, MPD_NAME, PLAYLIST_NAME
from cadenza.packager.errors import StorageError
from cadenza.packager.live.cli import LIVE_LADDER
from cadenza.packager.live.grid import LIVE_RATE_HZ
from cadenza.packager.live.ingest import LiveOptions, run_live
from cadenza.packager.live.sink_s3 import S3Output
from cadenza.packager.live.source import LiveInput
from cadenza.store.s3client import S3Settings
from cadenza.store.s3url import S3Url
from tests.conftest import MakeInput, Moto, free_port
from tests.origin.originproc import cadenza_serve
from tests.origin.waiting import wait_for
from tests.packager.conftest import Logged, S3Proxy, list_keys, s3_client
from tests.packager.live_support import FakeClock, ScriptedSource, blocks, named_files

PREFIX = "radio"
TRACK = "show"
SOURCE_S = 6.0
WINDOW_S = 3.0
PART_TICKS = 15360  # 0.32 s (the default part duration on the live grid)
PARTS_PER_SEGMENT = 6
WAIT_S = 60.0


def _bucket(moto: Moto) -> str:
    name = f"cadenza-live-{uuid.uuid4().hex[:12]}"
    s3_client(moto.url).create_bucket(Bucket=name)
    return name


def _output(
    endpoint_url: str,
    bucket: str,
    *,
    max_pending_batches: int = 64,
    stall_timeout_s: float = WAIT_S,
) -> S3Output:
    return S3Output(
        S3Url(bucket, PREFIX),
        S3Settings(endpoint_url=endpoint_url, max_attempts=1),
        max_pending_batches=max_pending_batches,
        stall_timeout_s=stall_timeout_s,
    )


def _get(endpoint_url: str, bucket: str, name: str) -> bytes:
    answer = s3_client(endpoint_url).get_object(Bucket=bucket, Key=f"{PREFIX}/{TRACK}/{name}")
    data: bytes = answer["Body"].read()
    return data


@pytest.fixture(scope="module")
def source(make_input: MakeInput) -> Path:
    return make_input("flac", 44100, 2, SOURCE_S, name="live-s3-source")


class Published:
    def __init__(self, moto: Moto, proxy: S3Proxy, bucket: str, local: Path) -> None:
        self.moto = moto
        self.proxy = proxy
        self.bucket = bucket
        self.local = local  # the same stream written to a local folder
        self.final: LivePresentation | None = None

    def get(self, name: str) -> bytes:
        return _get(self.moto.url, self.bucket, name)

    def names(self) -> set[str]:
        prefix = f"{PREFIX}/{TRACK}/"
        return {k[len(prefix) :] for k in list_keys(self.moto.url, self.bucket, prefix)}


@pytest.fixture(scope="module")
def published(
    source: Path, moto_server: Moto, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Published]:
    """The source ingested twice with the same clock and options: to S3 (through the
    proxy, which logs every request) and to a local folder."""
    proxy = S3Proxy(moto_server.url)
    proxy.start()
    try:
        local = tmp_path_factory.mktemp("live-local")
        result = Published(moto_server, proxy, _bucket(moto_server), local / TRACK)
        options = LiveOptions(LIVE_LADDER, window_s=WINDOW_S)
        out = _output(proxy.url, result.bucket)
        result.final = run_live(
            LiveInput(str(source)), out, TRACK, options, clock=FakeClock(), name="x"
        )
        run_live(LiveInput(str(source)), local, TRACK, options, clock=FakeClock(), name="x")
        yield result
    finally:
        proxy.stop()


def _local_names(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_s3_holds_what_a_local_folder_holds(published: Published) -> None:
    """The same object names, and the same bytes, as ``--out DIR`` with the same clock."""
    names = published.names()
    assert names == _local_names(published.local)
    assert LIVE_STATE_NAME in names and MASTER_NAME in names and MPD_NAME in names
    for name in sorted(names):
        assert published.get(name) == (published.local / name).read_bytes(), name


def test_live_json_is_the_final_model_and_the_stream_ended(published: Published) -> None:
    final = published.final
    assert final is not None and final.ended
    assert live_from_json(published.get(LIVE_STATE_NAME)) == final
    for r in final.renditions:
        playlist = published.get(f"{r.id}/{PLAYLIST_NAME}").decode()
        assert "#EXT-X-ENDLIST" in playlist
        last = r.segments[-1]
        assert f"{last.parts[-1].name(last.number)}" in playlist
    assert 'type="static"' in published.get(MPD_NAME).decode()


def test_parts_joined_are_their_segment(published: Published) -> None:
    final = published.final
    assert final is not None
    for r in final.renditions:
        for s in r.segments:
            parts = [published.get(f"{r.id}/{p.name(s.number)}") for p in s.parts]
            assert [len(p) for p in parts] == [p.size_bytes for p in s.parts]
            assert b"".join(parts) == published.get(f"{r.id}/{s.name}")


def test_the_dvr_window_removes_old_objects(published: Published) -> None:
    """Segments that left the window are gone from the bucket, parts and whole
    segment alike; what remains is exactly what the model names, plus the manifests."""
    final = published.final
    assert final is not None
    first = final.renditions[0].segments[0].number
    assert first > 1  # the window dropped something
    names = published.names()
    assert not {n for n in names if re.search(r"/seg-00001\.", n)}
    expected = {p.as_posix() for p in named_files(final)}
    expected |= {LIVE_STATE_NAME, MASTER_NAME, MPD_NAME}
    expected |= {f"{r.id}/{PLAYLIST_NAME}" for r in final.renditions}
    assert names == expected
    # ...and they were put first, then deleted (not simply never uploaded).
    deleted = {e.key for e in published.proxy.log if e.method == "POST" and "delete" in e.query}
    assert deleted  # one DeleteObjects request at least
    put = {e.key for e in published.proxy.puts()}
    assert f"{PREFIX}/{TRACK}/aac-64k/seg-00001.p0.m4s" in put


def _kind(entry: Logged) -> str:
    name = entry.key.rsplit("/", 1)[-1]
    if name == LIVE_STATE_NAME:
        return "state"
    if name == PLAYLIST_NAME:
        return "playlist"
    if name in (MASTER_NAME, MPD_NAME):
        return "top"
    return "media"


def test_uploads_keep_the_publishing_order(published: Published) -> None:
    """No ``live.json`` PUT overlaps a media or playlist PUT (each waits for the
    batch before it), every media object is in place before the last ``live.json``
    (which names it) starts, and the master playlist only after a media playlist."""
    puts = published.proxy.puts()
    states = [e for e in puts if _kind(e) == "state"]
    assert len(states) > 10
    for state in states:
        for other in puts:
            if _kind(other) in ("media", "playlist"):
                overlap = other.arrived < state.answered and state.arrived < other.answered
                assert not overlap, (state, other)
    last_state = states[-1]
    for entry in puts:
        if _kind(entry) == "media":
            assert entry.answered < last_state.arrived, entry
    first_master = min(e.arrived for e in puts if e.key.endswith(MASTER_NAME))
    first_playlist = min(e.answered for e in puts if _kind(e) == "playlist")
    assert first_playlist < first_master


def test_objects_carry_the_origin_headers(published: Published) -> None:
    client = s3_client(published.moto.url)
    head = client.head_object(
        Bucket=published.bucket, Key=f"{PREFIX}/{TRACK}/aac-64k/seg-00004.p0.m4s"
    )
    assert head["ContentType"] == "audio/mp4"
    assert "immutable" in head["CacheControl"]
    head = client.head_object(
        Bucket=published.bucket, Key=f"{PREFIX}/{TRACK}/aac-64k/playlist.m3u8"
    )
    assert head["ContentType"] == "application/vnd.apple.mpegurl"
    assert head["CacheControl"] == "no-cache"


def test_a_failing_put_fails_the_stream(
    source: Path, s3_proxy: S3Proxy, s3_bucket: str, tmp_path: Path
) -> None:
    """S3 refusing a part (after the client's retries) ends the ingest with a
    StorageError naming the object, and stops every thread of the sink."""
    s3_proxy.fault = lambda method, path, query: (
        503 if method == "PUT" and "seg-00002.p3" in path else None
    )
    with pytest.raises(StorageError, match=r"seg-00002\.p3\.m4s.*upload failed"):
        run_live(
            LiveInput(str(source)),
            _output(s3_proxy.url, s3_bucket),
            TRACK,
            LiveOptions(LIVE_LADDER),
            clock=FakeClock(),
        )
    # moto's request threads come and go: the ingest's own are named
    ours = {"live s3 upload", "live publish", *(r.id for r in LIVE_LADDER.rungs)}
    assert not [t.name for t in threading.enumerate() if t.name in ours]


def test_s3_slower_than_real_time_fails_bounded(
    source: Path, s3_proxy: S3Proxy, s3_bucket: str
) -> None:
    """S3 that stops answering: the backlog fills (two batches here), the publisher
    waits for room a bounded time, then the stream fails with a clear error; the
    memory held is the bound, not the stream."""
    release = threading.Event()

    def hang(method: str, path: str, query: str) -> int | None:
        if method == "PUT" and "seg-00001.p2" in path:
            release.wait(WAIT_S)  # the proxy answers nothing until the test is done
        return None

    s3_proxy.fault = hang
    out = _output(s3_proxy.url, s3_bucket, max_pending_batches=2, stall_timeout_s=0.5)
    try:
        with pytest.raises(StorageError, match="fell behind real time"):
            run_live(
                LiveInput(str(source)), out, TRACK, LiveOptions(LIVE_LADDER), clock=FakeClock()
            )
    finally:
        release.set()


def test_a_missing_bucket_is_a_usage_error(
    source: Path,
    moto_server: Moto,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    assert main(["live", str(source), "--out", "s3://no-such-bucket-here/live"]) == 2
    err = capsys.readouterr().err
    assert "s3://no-such-bucket-here" in err and "404" in err


def test_an_unreachable_endpoint_is_a_usage_error(
    source: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    assert main(["live", str(source), "--out", "s3://some-bucket/live"]) == 2
    assert "S3 unreachable" in capsys.readouterr().err


def test_a_bad_s3_url_is_a_usage_error(source: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["live", str(source), "--out", "s3://Not_A_Bucket/live"]) == 2
    assert "not a bucket name" in capsys.readouterr().err


def test_the_command_publishes_to_s3(
    source: Path, moto_server: Moto, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    out = f"s3://{s3_bucket}/{PREFIX}"
    assert main(["live", str(source), "--out", out, "--track-id", TRACK, "-q"]) == 0
    model = live_from_json(_get(moto_server.url, s3_bucket, LIVE_STATE_NAME))
    assert model.ended and model.renditions[0].segments


# -- cadenza serve s3://… while the ingest runs -------------------------------------


def _fetch_bytes(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT_S) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _fetch(url: str) -> tuple[int, str]:
    status, body = _fetch_bytes(url)
    return status, body.decode()


def _blocked(origin_url: str) -> bool:
    _, text = _fetch(origin_url + "/metrics")
    found = re.search(r"^cadenza_live_blocked_requests\S* (\S+)$", text, re.MULTILINE)
    return found is not None and float(found.group(1)) >= 1


def _parts_out(endpoint_url: str, bucket: str) -> int:
    """Parts of the first rendition that ``live.json`` on S3 names now."""
    try:
        model = live_from_json(_get(endpoint_url, bucket, LIVE_STATE_NAME))
    except Exception:  # not there yet
        return 0
    return sum(len(s.parts) for s in model.renditions[0].segments)


def test_cadenza_serve_s3_answers_a_blocking_reload_while_the_ingest_runs(
    moto_server: Moto, s3_bucket: str, tmp_path: Path
) -> None:
    """Input is handed to the ingest a part at a time by the test.  With ``held``
    parts of input given, part ``held`` cannot exist; a blocking reload for it is
    held by the origin until more input comes, then answered with it."""
    clock = FakeClock(time.time())
    gate = threading.Semaphore(0)
    script = blocks(12.0, block_s=PART_TICKS / LIVE_RATE_HZ)
    source = ScriptedSource(script, clock, on_read=lambda: gate.acquire(timeout=WAIT_S))
    out = _output(moto_server.url, s3_bucket)
    failure: list[BaseException] = []

    def ingest() -> None:
        try:
            run_live(source, out, TRACK, LiveOptions(LIVE_LADDER), clock=clock)
        except BaseException as exc:  # reported by the test
            failure.append(exc)

    held = 9  # parts of input given: segment 1 whole, and 3 parts of segment 2
    gate.release(held)
    worker = threading.Thread(target=ingest)
    worker.start()
    try:
        with cadenza_serve(
            f"s3://{s3_bucket}/{PREFIX}", tmp_path, env={"AWS_ENDPOINT_URL": moto_server.url}
        ) as origin:
            playlist = f"{origin.url}/{TRACK}/aac-64k/{PLAYLIST_NAME}"
            # Encoder delay holds the last part given back: wait for the one before.
            wait_for(
                lambda: _parts_out(moto_server.url, s3_bucket) >= held - 1,
                "the parts of the input given",
                timeout_s=WAIT_S,
            )
            msn, part = held // PARTS_PER_SEGMENT + 1, held % PARTS_PER_SEGMENT
            answer: list[tuple[int, str]] = []
            request = threading.Thread(
                target=lambda: answer.append(_fetch(f"{playlist}?_HLS_msn={msn}&_HLS_part={part}"))
            )
            request.start()
            wait_for(lambda: _blocked(origin.url), "the reload held", timeout_s=WAIT_S)
            assert not answer  # held: its part needs input not given yet
            gate.release(3)
            request.join(WAIT_S)
            assert answer, "the blocking reload was not answered"
            status, text = answer[0]
            assert status == 200
            name = f"seg-{msn:05d}.p{part}.m4s"
            assert f'URI="{name}"' in text
            assert "#EXT-X-ENDLIST" not in text
            status, body = _fetch_bytes(f"{origin.url}/{TRACK}/aac-64k/{name}")
            assert status == 200
            assert body == _get(moto_server.url, s3_bucket, f"aac-64k/{name}")
            # The rest of the input: the stream ends, and the origin says so.
            gate.release(len(script))
            worker.join(WAIT_S)
            assert not worker.is_alive() and not failure, failure
            wait_for(
                lambda: "#EXT-X-ENDLIST" in _fetch(playlist)[1],
                "the ended playlist",
                timeout_s=WAIT_S,
            )
    finally:
        gate.release(len(script) + 10)
        worker.join(WAIT_S)
