"""Request logs: one access line per answered request from either transport,
secrets redacted, text or JSON; a malformed request is one INFO line without
a traceback, rate-limited."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadStatusLine

from cadenza.origin.access_log import (
    AccessRecord,
    Transport,
    access_log_for,
    redact_target,
    sid_of,
)
from cadenza.origin.logs import (
    JsonFormatter,
    LineWriter,
    LogFormat,
    NoiseLimiter,
    RequestErrorLog,
    configure_logging,
    direct_writer,
    flush_logs,
)
from tests.fetch import fetch
from tests.origin.conftest import TRACK
from tests.origin.keepalive import keepalive_get
from tests.origin.originproc import OriginProcess, cadenza_serve

WAIT_S = 30.0  # the bound of a wait for a log line (never a measured figure)
SEGMENT = f"{TRACK}/aac-64k/seg-00001.m4s"


# -- the record, redaction, formats (pure) -----------------------------------------


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/track/aac-64k/seg-00001.m4s", "/track/aac-64k/seg-00001.m4s"),
        ("/t/1767225600.k1.c2lnbmF0dXJl/track/master.m3u8", "/t/<redacted>/track/master.m3u8"),
        ("/track/master.m3u8?token=abc&sid=s1", "/track/master.m3u8?token=<redacted>&sid=s1"),
        ("/x?X-Amz-Signature=ff&Sig=1&api_key=k", "/x?X-Amz-Signature=<redacted>&Sig=<redacted>"
         "&api_key=<redacted>"),
        ("/track/master.m3u8?CMCD=sid%3D%22a%22", "/track/master.m3u8?CMCD=sid%3D%22a%22"),
    ],
)  # fmt: skip
def test_secrets_are_redacted(target: str, logged: str) -> None:
    assert redact_target(target) == logged


def test_a_long_target_is_cut() -> None:
    logged = redact_target("/" + "a" * 5000)
    assert len(logged) == 1024 + 3 and logged.endswith("...")


@pytest.mark.parametrize(
    ("query", "header", "sid"),
    [
        ("sid=abc", None, "abc"),
        ("CMCD=br%3D128%2Csid%3D%22s-2%22", None, "s-2"),
        ("", 'sid="from-header"', "from-header"),
        ("codec=mp4a", None, None),
    ],
)
def test_the_session_is_read_from_the_query_or_cmcd(
    query: str, header: str | None, sid: str | None
) -> None:
    assert sid_of(query, header) == sid


RECORD = AccessRecord(
    "203.0.113.7", "GET", "/track/a b", 200, 1234, 560, "hit", None, Transport.FAST
)


def test_the_text_line_is_key_value_pairs() -> None:
    assert str(RECORD) == (
        'client=203.0.113.7 method=GET path="/track/a b" status=200 sent_bytes=1234 '
        "duration_us=560 cache=hit sid=- transport=fast"
    )


def test_the_json_line_carries_every_field() -> None:
    logger = logging.getLogger("test.access")
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, "%s", (RECORD,), None,
        extra={"access_fields": RECORD.fields},
    )  # fmt: skip
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "INFO" and line["logger"] == "test.access"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert {k: line[k] for k in RECORD.fields()} == RECORD.fields()


def test_the_access_log_is_off_above_info() -> None:
    logger = logging.getLogger("cadenza.access")
    old = logger.level
    try:
        logger.setLevel(logging.WARNING)
        assert access_log_for(True) is None
        logger.setLevel(logging.INFO)
        assert access_log_for(True) is not None
        assert access_log_for(False) is None
    finally:
        logger.setLevel(old)


def test_noise_is_limited_per_window_then_counted() -> None:
    now = [0.0]
    limiter = NoiseLimiter(lines=3, window_s=60.0, clock=lambda: now[0])
    assert [limiter.admit() for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    now[0] = 60.0
    assert limiter.admit() == (True, 2)  # the new window reports the last one's drops
    assert limiter.admit() == (True, 0)


def test_malformed_requests_are_one_line_each_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    adapter = RequestErrorLog(
        logging.getLogger("test.server"), NoiseLimiter(lines=2, window_s=10.0, clock=lambda: now[0])
    )
    caplog.set_level(logging.INFO, logger="test.server")
    for _ in range(5):
        adapter.exception("Error handling request", "198.51.100.4", exc_info=BadStatusLine("x"))
    now[0] = 10.0
    adapter.exception("Error handling request", "198.51.100.4", exc_info=BadStatusLine("x"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:2] == ["malformed request from 198.51.100.4: 400 Bad status line 'x'"] * 2
    assert messages[2] == "3 more malformed requests were not logged in 10 s"
    assert len(messages) == 4
    assert all(r.exc_info is None for r in caplog.records)


# -- a real origin ----------------------------------------------------------------


def _access_lines(origin: OriginProcess) -> list[dict[str, object]]:
    lines = []
    for text in origin.log.read_text(errors="replace").splitlines():
        if text.startswith("{"):
            line = json.loads(text)
            if line["logger"] == "cadenza.access":
                lines.append(line)
    return lines


def _wait_for_access(origin: OriginProcess, path: str, count: int = 1) -> list[dict[str, object]]:
    """The access lines for ``path``, once there are ``count`` (bounded wait: an
    aiohttp answer is logged after it is sent)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = [line for line in _access_lines(origin) if line["path"] == path]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, origin.log_tail()
        time.sleep(0.02)


@pytest.fixture(scope="module")
def json_origin(
    packaged_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OriginProcess]:
    with cadenza_serve(
        str(packaged_root), tmp_path_factory.mktemp("logs"), log_format="json"
    ) as origin:
        yield origin


def test_both_transports_write_the_same_fields(json_origin: OriginProcess) -> None:
    path = f"/{SEGMENT}"
    first = keepalive_get(json_origin.port, path)
    second = keepalive_get(json_origin.port, path)
    assert (first.status, second.status, second.field("X-Cadenza-Cache")) == (200, 200, "hit")
    lines = _wait_for_access(json_origin, path, 2)
    hit = next(line for line in lines if line["cache"] == "hit")
    assert hit["transport"] == "fast"
    assert hit["method"] == "GET" and hit["status"] == 200 and hit["client"] == "127.0.0.1"
    assert hit["sent_bytes"] == len(second.head) + len(second.body)
    assert isinstance(hit["duration_us"], int) and hit["duration_us"] >= 0
    assert hit["sid"] is None

    status = fetch(json_origin.url + "/v1/tracks")[0]
    (tracks,) = _wait_for_access(json_origin, "/v1/tracks")
    assert (tracks["status"], tracks["transport"], tracks["cache"]) == (status, "aiohttp", None)


def test_a_file_aiohttp_sends_with_sendfile_is_logged_at_its_size(
    json_origin: OriginProcess,
) -> None:
    """aiohttp counts only what passes through its writer; the player libraries go out
    with sendfile(2), and the line must still say how much was sent."""
    path = "/player/lib/hls.min.js"
    status, headers, body = fetch(json_origin.url + path)
    if status == 404:
        pytest.skip("the player libraries are not installed here (npm ci)")
    assert status == 200 and len(body) > 100_000
    (line,) = _wait_for_access(json_origin, path)
    assert (line["transport"], line["status"]) == ("aiohttp", 200)
    head_bytes = int(line["sent_bytes"]) - len(body)  # type: ignore[call-overload]
    assert 0 < head_bytes < 2048, line
    assert int(headers["Content-Length"]) == len(body)


def test_a_404_is_logged_with_its_url_and_session(json_origin: OriginProcess) -> None:
    path = f"/{TRACK}/aac-64k/seg-99999.m4s?sid=viewer-1&token=s3cret"
    assert fetch(json_origin.url + path)[0] == 404
    logged = f"/{TRACK}/aac-64k/seg-99999.m4s?sid=viewer-1&token=<redacted>"
    (line,) = _wait_for_access(json_origin, logged)
    assert (line["status"], line["sid"], line["method"]) == (404, "viewer-1", "GET")
    assert "s3cret" not in json_origin.log.read_text()


def test_a_session_request_on_the_fast_transport_is_logged(json_origin: OriginProcess) -> None:
    path = f"/{TRACK}/master.m3u8?CMCD=sid%3D%22viewer-2%22"
    assert keepalive_get(json_origin.port, path).status == 200
    (line,) = _wait_for_access(json_origin, path)
    assert (line["sid"], line["transport"], line["status"]) == ("viewer-2", "fast", 200)


def test_decided_segments_answered_on_the_fast_transport_are_logged(
    json_origin: OriginProcess,
) -> None:
    """A decided segment's redirect is answered on the caller's stack (its load
    never waits, sessions in this process) in the round it was asked in, and is
    logged like any other answer; so are the bytes served at the start."""
    cmcd = "CMCD=bl%3D20000%2Cmtp%3D5000"
    paths = [f"/{TRACK}/group-aac/seg-0000{n}.m4s?sid=viewer-3&{cmcd}" for n in (1, 2, 3)]
    statuses = [keepalive_get(json_origin.port, path).status for path in paths]
    assert 302 in statuses and set(statuses) <= {200, 302}, statuses
    for path, status in zip(paths, statuses, strict=True):
        (line,) = _wait_for_access(json_origin, path)
        assert (line["status"], line["transport"], line["sid"]) == (status, "fast", "viewer-3")
        assert line["cache"] in ("decided", "miss", "hit") and int(str(line["sent_bytes"])) > 0


def test_malformed_requests_are_rate_limited_lines_without_traceback(
    json_origin: OriginProcess,
) -> None:
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", json_origin.port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
            while conn.recv(65536):
                pass
    fetch(json_origin.url + "/healthz")
    _wait_for_access(json_origin, "/healthz")
    text = json_origin.log.read_text()
    assert "Traceback" not in text
    malformed = [line for line in text.splitlines() if "malformed request from" in line]
    assert 1 <= len(malformed) <= 20


def test_the_text_format_is_one_key_value_line(packaged_root: Path, tmp_path: Path) -> None:
    with cadenza_serve(str(packaged_root), tmp_path) as origin:
        fetch(f"{origin.url}/{SEGMENT}?sid=t-1")
        deadline = time.monotonic() + WAIT_S
        pattern = (
            rf"cadenza\.access INFO client=127\.0\.0\.1 method=GET path=/{SEGMENT}\?sid=t-1 "
            r"status=200 sent_bytes=\d+ duration_us=\d+ cache=\S+ sid=t-1 transport=\w+$"
        )
        while not re.search(pattern, origin.log.read_text(), re.MULTILINE):
            assert time.monotonic() < deadline, origin.log_tail()
            time.sleep(0.02)


def test_every_answer_is_written_by_the_time_the_origin_stopped(
    packaged_root: Path, tmp_path: Path
) -> None:
    path = f"/{SEGMENT}"
    with cadenza_serve(str(packaged_root), tmp_path, log_format="json") as origin:
        replies = [keepalive_get(origin.port, path) for _ in range(20)]
        assert {reply.status for reply in replies} == {200}
        origin.process.terminate()
        assert origin.process.wait(timeout=WAIT_S) == 0, origin.log_tail()
        lines = [line for line in _access_lines(origin) if line["path"] == path]
    assert len(lines) == 20
    assert {line["transport"] for line in lines} >= {"fast"}


# -- the fast path: lines formatted without a LogRecord, written once per turn ------


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The root logger restored after the test (configure_logging replaces its
    handlers, pytest's included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


TRICKY = AccessRecord(
    "2001:db8::7", "GET", '/a "b"\\c\td ü\u2028', 404, 0, 7, None, "s é", Transport.AIOHTTP
)


def _untimed(line: str) -> str:
    """The line without its time (the two lines were made a moment apart)."""
    line = re.sub(r'^\{"time": "[^"]*"', '{"time": ""', line)
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "", line)


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize("log_format", list(LogFormat))
@pytest.mark.parametrize("record", [RECORD, TRICKY], ids=["plain", "escaped"])
def test_a_direct_line_is_the_line_of_a_log_record(
    tmp_path: Path, log_format: LogFormat, record: AccessRecord
) -> None:
    log_file = tmp_path / "log"
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        handler = configure_logging("info", log_format, fd)
        assert direct_writer(logging.getLogger("cadenza.access")) is handler  # no LogRecord
        access = access_log_for(True)
        assert access is not None
        access.write(record)
        flush_logs()
    finally:
        os.close(fd)
    logger = logging.getLogger("cadenza.access")
    expected = handler.format(
        logger.makeRecord(
            logger.name, logging.INFO, __file__, 1, "%s", (record,), None,
            extra={"access_fields": record.fields},
        )
    )  # fmt: skip
    (line,) = log_file.read_text().split("\n")[:-1]  # U+2028 is not a line end here
    assert _untimed(line) == _untimed(expected)
    if log_format is LogFormat.JSON:
        assert {k: json.loads(line)[k] for k in record.fields()} == record.fields()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", json.loads(line)["time"])
    else:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} cadenza\.access INFO ", line)


class _Kept(logging.Handler):
    """A handler of a test's own: keeps the records it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.usefixtures("root_logging")
def test_access_lines_are_log_records_when_another_handler_takes_them(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    kept = _Kept()
    logger = logging.getLogger("cadenza.access")
    logger.addHandler(kept)
    try:
        configure_logging("info", LogFormat.JSON, fd)
        assert direct_writer(logger) is None
        access = access_log_for(True)
        assert access is not None
        access.write(RECORD)
        flush_logs()
    finally:
        logger.removeHandler(kept)
        os.close(fd)
    assert [record.getMessage() for record in kept.records] == [str(RECORD)]
    (line,) = (tmp_path / "log").read_text().splitlines()
    assert json.loads(line)["path"] == RECORD.path


@pytest.mark.usefixtures("root_logging")
def test_lines_left_when_the_loop_stops_are_written_by_flush_logs(tmp_path: Path) -> None:
    log_file = tmp_path / "log"
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    loop = asyncio.new_event_loop()
    try:
        configure_logging("info", LogFormat.TEXT, fd)
        access = access_log_for(True)
        assert access is not None

        async def last_turn() -> None:
            for _ in range(5):
                access.write(RECORD)
            logging.getLogger("cadenza.origin.server").info("stopping")
            asyncio.get_running_loop().stop()  # the loop's last turn: its flush never runs

        loop.run_until_complete(last_turn())
        assert log_file.read_text() == ""
        flush_logs()
    finally:
        loop.close()
        os.close(fd)
    lines = log_file.read_text().splitlines()
    assert [line.split(" INFO ")[1] for line in lines] == [str(RECORD)] * 5 + ["stopping"]


def _pipe() -> tuple[int, int]:
    """A pipe whose reading end never blocks."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    return read_fd, write_fd


def _read_all(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_lines_of_one_loop_turn_are_written_at_its_end() -> None:
    read_fd, write_fd = _pipe()
    try:
        writer = LineWriter(write_fd)
        for index in range(3):
            writer.write(f"line {index}\n")
        assert _read_all(read_fd) == b""  # still this turn
        await asyncio.sleep(0)
        assert _read_all(read_fd) == b"line 0\nline 1\nline 2\n"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_outside_a_loop_each_line_is_written_at_once() -> None:
    read_fd, write_fd = _pipe()
    try:
        LineWriter(write_fd).write("now\n")
        assert _read_all(read_fd) == b"now\n"
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_writes_to_a_pipe_or_socket_are_whole_lines_within_pipe_buf() -> None:
    # Each write to a SOCK_SEQPACKET socket is one message: the reader sees the writes.
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with left, right:
        right.setblocking(False)
        writer = LineWriter(left.fileno())
        lines = [f"{index:05d} {'x' * (90 + index % 17)}\n" for index in range(200)]
        lines.append("y" * 5000 + "\n")  # longer than PIPE_BUF: written alone
        for line in lines:
            writer.write(line)
        await asyncio.sleep(0)
        messages: list[bytes] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(right.recv(65536))
    assert b"".join(messages) == "".join(lines).encode()
    assert all(message.endswith(b"\n") for message in messages)
    assert all(len(message) <= select.PIPE_BUF for message in messages[:-1])
    assert len(messages[-1]) == 5001
    assert len(messages) <= 8  # ~21 KB: a few writes, not one a line


async def test_a_stream_that_takes_nothing_never_blocks_the_loop() -> None:
    """A pipe nobody reads: lines past the bound are dropped and counted; the
    rest reach the reader whole and in order once it reads, then the count."""
    read_fd, write_fd = _pipe()
    reported: list[int] = []
    done = asyncio.Event()

    def on_drop(count: int) -> None:
        reported.append(count)
        done.set()

    try:
        writer = LineWriter(write_fd, max_held_bytes=16 * 1024, retry_s=0.001)
        writer.on_drop = on_drop
        written = [f"{turn:03d} {index:02d} {'z' * 100}\n" for turn in range(100)
                   for index in range(50)]  # fmt: skip
        for turn in range(100):  # ~530 KB, eight times what the pipe holds
            for line in written[turn * 50 : turn * 50 + 50]:
                writer.write(line)
            await asyncio.sleep(0)
        assert writer.dropped_lines > 0
        received = _read_all(read_fd)  # the reader is back
        await asyncio.wait_for(done.wait(), WAIT_S)
        received += _read_all(read_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    lines = received.decode().splitlines(keepends=True)
    assert lines == sorted(lines) and set(lines) <= set(written)  # whole, in order
    assert len(lines) + writer.dropped_lines == len(written)
    assert reported == [writer.dropped_lines]
