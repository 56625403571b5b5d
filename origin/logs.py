"""The origin's log: its format (``log_format``: text or one JSON object a
line), its level (``log_level``), how lines reach stderr
(:class:`LineWriter`: whole lines, once per event-loop turn, never blocking
the loop), and a client's noise kept out of it.

A request that does not parse is a client's doing, not the origin's: it is
logged as one INFO line without a traceback, and at most
:data:`NOISE_LINES` such lines per :data:`NOISE_WINDOW_S`; the rest are
counted and the count logged once the window is over, so a client (or a
scanner) cannot fill the log.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import select
import stat
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Final

from aiohttp.http_exceptions import HttpProcessingError

NOISE_LINES: Final = 20
NOISE_WINDOW_S: Final = 60.0
# The most of a malformed request's parser message that is logged.
_LOGGED_ERROR_CHARS: Final = 120
_TEXT_FORMAT: Final = "%(asctime)s %(name)s %(levelname)s %(message)s"


class LogFormat(enum.StrEnum):
    TEXT = "text"  # ``time logger LEVEL message``; access lines are key=value pairs
    JSON = "json"  # one JSON object a line (field schema: docs/operating.md)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``pid``, ``message`` (an access line's: method, path, status); an access
    line adds its record's fields
    (:meth:`cadenza.origin.access_log.AccessRecord.fields`), an exception its
    ``traceback``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # which worker, with --workers
        }
        fields = getattr(record, "access_fields", None)
        if callable(fields):  # an access line: its fields, and a short message
            access = fields()
            line["message"] = f"{access['method']} {access['path']} {access['status']}"
            line.update(access)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


# Lines gathered in one event-loop turn before they are written anyway.
MAX_TURN_LINES: Final = 512
# Bytes the stream has not taken yet (its reader lags) past which new lines are
# dropped and counted.
MAX_HELD_BYTES: Final = 1024 * 1024
# A stream that did not take everything is tried again after this long.
RETRY_S: Final = 0.05
# At shutdown, how long a stream that takes nothing is waited for.
_SHUTDOWN_WAIT_MS: Final = 5000


class LineWriter:
    """Whole lines to a file descriptor (the origin's stderr), gathered and
    written once per event-loop turn (at once outside a loop), or when
    :data:`MAX_TURN_LINES` are waiting: one ``write`` for a turn's lines, not
    one per line.

    Whole lines only, never interleaved with another worker's: to a regular
    file or a terminal, one ``write`` of a turn's lines (Linux appends each
    ``write`` to a file shared by the workers whole); to a pipe or a socket,
    writes of at most ``PIPE_BUF`` (4096) bytes cut at line ends, which POSIX
    makes atomic (a longer line is written alone, and may interleave).

    The event loop never waits for the stream: a pipe or socket is written
    only while ``poll`` says it takes more; what it does not take is held and
    tried again after :data:`RETRY_S`, and while more than
    :data:`MAX_HELD_BYTES` are held, new lines are dropped, counted, and the
    count handed to ``on_drop`` once the stream took the rest.  At shutdown
    (:meth:`flush` with ``block``) the rest is written, waiting for the stream
    up to 5 s.  A process killed with SIGKILL loses its last turn's lines."""

    def __init__(
        self,
        fd: int,
        *,
        max_turn_lines: int = MAX_TURN_LINES,
        max_held_bytes: int = MAX_HELD_BYTES,
        retry_s: float = RETRY_S,
    ) -> None:
        self.fd = fd
        mode = os.fstat(fd).st_mode
        self._atomic_bytes = select.PIPE_BUF if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else 0
        # A regular file always takes a write; a pipe, socket or terminal may not.
        self._poll: select.poll | None = None
        if not stat.S_ISREG(mode):
            self._poll = select.poll()
            self._poll.register(fd, select.POLLOUT)
        self._max_turn_lines = max_turn_lines
        self._max_held_bytes = max_held_bytes
        self._retry_s = retry_s
        self.lines: list[str] = []  # this turn's, each ending in a newline
        self._lock = threading.Lock()
        self._held = b""  # written, not taken by the stream yet
        self._flush_pending = False
        self._retry: asyncio.TimerHandle | None = None
        self._unreported_drops = 0
        self.dropped_lines = 0
        self.on_drop: Callable[[int], None] | None = None

    def write(self, line: str) -> None:
        """``line`` (ending in a newline), written at the end of this turn."""
        lines = self.lines
        lines.append(line)
        if not self._flush_pending or len(lines) >= self._max_turn_lines:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (yet, any more): now
            self.flush(block=True)
            return
        if len(self.lines) >= self._max_turn_lines:
            self.flush()
        if not self._flush_pending:
            self._flush_pending = True
            loop.call_soon(self._turn_ended)

    def _turn_ended(self) -> None:
        self._flush_pending = False
        self.flush()

    def _retried(self) -> None:
        self._retry = None
        self.flush()

    def flush(self, *, block: bool = False) -> None:
        """Write the lines gathered; ``block``: all of them, waiting for the
        stream (at shutdown), else only what it takes now."""
        with self._lock:  # a line logged by another thread is written by that thread
            if block:  # after a loop ended, what it scheduled never runs: forget it
                self._flush_pending = False
                self._retry = None
            lines = self.lines
            count = len(lines)
            if count:
                # What another thread appends meanwhile stays for the next flush.
                batch = lines[:count]
                del lines[:count]
                if len(self._held) > self._max_held_bytes and not block:
                    self._drop(count)
                else:
                    self._held += "".join(batch).encode("utf-8", "backslashreplace")
            if self._held:
                self._write_held(_SHUTDOWN_WAIT_MS if block else 0)
            dropped = 0
            if self._held:
                self._retry_later()
            elif self._unreported_drops and self.on_drop is not None:
                dropped, self._unreported_drops = self._unreported_drops, 0
        on_drop = self.on_drop
        if dropped and on_drop is not None:
            on_drop(dropped)

    def _write_held(self, wait_ms: int) -> None:
        data = memoryview(self._held)
        start = 0
        while start < len(data):
            end = len(data)
            if self._atomic_bytes and end - start > self._atomic_bytes:
                cut = self._held.rfind(b"\n", start, start + self._atomic_bytes)
                end = cut + 1 if cut >= 0 else self._held.find(b"\n", start) + 1 or end
            if self._poll is not None and not self._poll.poll(wait_ms):
                break
            try:
                start += os.write(self.fd, data[start:end])
            except BlockingIOError:
                break
            except OSError:  # the stream is gone (a closed pipe): nobody reads it
                self._drop(self._held.count(b"\n", start))
                start = len(data)
        data.release()
        self._held = self._held[start:]
        if self._held and wait_ms:  # at shutdown, a stream that took nothing for 5 s
            self._drop(self._held.count(b"\n"))
            self._held = b""

    def _drop(self, count: int) -> None:
        self.dropped_lines += count
        self._unreported_drops += count

    def _retry_later(self) -> None:
        if self._retry is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._retry = loop.call_later(self._retry_s, self._retried)


class LineHandler(logging.Handler):
    """The log's one handler: each record formatted (``log_format``) and its
    line handed to a :class:`LineWriter`; access lines skip it
    (:func:`direct_writer`)."""

    def __init__(self, writer: LineWriter, log_format: LogFormat) -> None:
        super().__init__()
        self.writer = writer
        self.log_format = log_format
        if log_format is LogFormat.JSON:
            self.setFormatter(JsonFormatter())
        else:
            self.setFormatter(logging.Formatter(_TEXT_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self.writer.write(line)

    def flush(self) -> None:
        """Outside a running loop (logging's shutdown at exit), every line now."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.writer.flush(block=True)


def configure_logging(level: str, log_format: LogFormat, fd: int | None = None) -> LineHandler:
    """The root logger's one handler (to ``fd``, stderr's by default, written
    per event-loop turn), in the format and at the level asked."""
    writer = LineWriter(sys.stderr.fileno() if fd is None else fd)
    handler = LineHandler(writer, log_format)
    # Never written by either format: not worth a lookup per line.
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    writer.on_drop = partial(
        logging.getLogger(__name__).warning,
        "%d log lines were dropped: the log's stream did not take them",
    )
    return handler


def flush_logs() -> None:
    """Write every line still gathered (at shutdown, after the loop)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LineHandler):
            handler.writer.flush(block=True)


def direct_writer(logger: logging.Logger) -> LineHandler | None:
    """The configured handler when it alone, unfiltered, takes ``logger``'s
    INFO lines: they may then be formatted and handed to its writer without a
    ``LogRecord`` (the access log, :mod:`cadenza.origin.access_log`); None
    when something else also takes them (a test capturing them, an
    application embedding the origin)."""
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        handlers.extend(current.handlers)
        current = current.parent if current.propagate else None
    if len(handlers) != 1 or not isinstance(handlers[0], LineHandler):
        return None
    handler = handlers[0]
    return handler if not handler.filters and handler.level <= logging.INFO else None


class NoiseLimiter:
    """At most ``lines`` per ``window_s`` pass; how many did not is reported by
    the first call after the window ends (``clock``: seconds, injected)."""

    def __init__(
        self,
        lines: int = NOISE_LINES,
        window_s: float = NOISE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines = lines
        self.window_s = window_s
        self._clock = clock
        self._window_start_s = -window_s
        self._passed = 0
        self._dropped = 0

    def admit(self) -> tuple[bool, int]:
        """(whether this line is logged, lines dropped in the window that just
        ended: to be reported now, 0 for none)."""
        now_s = self._clock()
        dropped = 0
        if now_s - self._window_start_s >= self.window_s:
            dropped, self._dropped = self._dropped, 0
            self._window_start_s = now_s
            self._passed = 0
        if self._passed < self.lines:
            self._passed += 1
            return True, dropped
        self._dropped += 1
        return False, dropped


class RequestErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, with a request that does not parse (a client's
    doing) logged as one rate-limited INFO line without a traceback; any
    other exception is logged in full."""

    def __init__(self, logger: logging.Logger, limiter: NoiseLimiter | None = None) -> None:
        super().__init__(logger, {})
        self.limiter = limiter or NoiseLimiter()

    def exception(self, msg: object, *args: object, **kwargs: object) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            self._malformed(logging.INFO, args, error)
            return
        self.logger.exception(msg, *args, **kwargs)  # type: ignore[arg-type]

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        """aiohttp logs a first request that is not HTTP at all (TLS to a plain
        port, a scanner) at DEBUG, with its traceback: the same one line."""
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            if self.logger.isEnabledFor(logging.DEBUG):
                self._malformed(logging.DEBUG, args, error)
            return
        self.logger.debug(msg, *args, **kwargs)  # type: ignore[arg-type]

    def _malformed(self, level: int, args: tuple[object, ...], error: HttpProcessingError) -> None:
        admitted, dropped = self.limiter.admit()
        if dropped:
            self.logger.log(
                level,
                "%d more malformed requests were not logged in %g s",
                dropped,
                self.limiter.window_s,
            )
        if admitted:
            remote = args[0] if args else None
            detail = " ".join(str(error.message).split())[:_LOGGED_ERROR_CHARS]
            self.logger.log(level, "malformed request from %s: %d %s", remote, error.code, detail)
