"""The access log: one line per answered request, the same fields from both
transports (the aiohttp app and the fast transport), field schema in
``docs/operating.md`` ("Request logs").

A line is an :class:`AccessRecord` at INFO from the ``cadenza.access``
logger; the text format writes it as ``key=value`` pairs, the JSON format as
fields of the line's object (:class:`cadenza.origin.logs.JsonFormatter`).
With the origin's own log it is formatted here, the same text, and handed
to the log's writer without a ``LogRecord`` (:class:`AccessLog`): a few
microseconds a line, not the ~25 of ``logging``'s handler and formatter.
Nothing is built unless the log is on (``access_log`` and INFO enabled):
:func:`access_log_for` is then None and each transport skips its hook.

Secrets never reach the log: a signed URL's token segment (``/t/<token>/``)
and the value of any query argument whose name says it is a credential
(``token``, ``sig``, ``signature``, ``key``, ``auth``, ``secret``,
``password``, ``credential``, ``X-Amz-*``) are replaced by ``<redacted>``.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from aiohttp import web, web_fileresponse
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from cadenza.origin.auth import TOKEN_PREFIX
from cadenza.origin.logs import LineHandler, LogFormat, direct_writer

ACCESS_LOGGER: Final = "cadenza.access"
REDACTED: Final = "<redacted>"
# Longest path (query included) and sid written; a longer one is cut, marked "...".
MAX_PATH_CHARS: Final = 1024
MAX_SID_CHARS: Final = 64
_SECRET_WORDS: Final = (
    "token",
    "sig",
    "key",
    "auth",
    "secret",
    "password",
    "credential",
    "x-amz-",
)
_CACHE_FIELD: Final = b"\r\nX-Cadenza-Cache: "
_MILLISECONDS: Final = tuple(f"{ms:03d}" for ms in range(1000))


class Transport(enum.StrEnum):
    """Which transport answered."""

    FAST = "fast"  # the raw-asyncio hot path
    AIOHTTP = "aiohttp"  # the full application


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One answered request."""

    client: str | None  # the client's address (after trusted proxies: origin.proxies)
    method: str
    path: str  # the target, query included, secrets redacted
    status: int
    sent_bytes: int  # written for the response, head included
    duration_us: int  # from the whole request head to the response handed to the kernel
    cache: str | None  # X-Cadenza-Cache: hit, miss, coalesced, ... (None: not an object)
    sid: str | None  # the session: ?sid=, CMCD sid (query or CMCD-Session)
    transport: Transport

    def fields(self) -> dict[str, object]:
        return {
            "client": self.client,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "sent_bytes": self.sent_bytes,
            "duration_us": self.duration_us,
            "cache": self.cache,
            "sid": self.sid,
            "transport": self.transport.value,
        }

    def __str__(self) -> str:
        """The text format's ``name=value`` pairs, in :meth:`fields` order."""
        return text_fields(
            self.client, self.method, self.path, self.status, self.sent_bytes,
            self.duration_us, self.cache, self.sid, self.transport.value,
        )  # fmt: skip


def text_fields(
    client: str | None,
    method: str,
    path: str,
    status: int,
    sent_bytes: int,
    duration_us: int,
    cache: str | None,
    sid: str | None,
    transport: str,
) -> str:
    """An access line's ``name=value`` pairs (the text format)."""
    return (
        f"client={_word(client)} method={_word(method)} path={_word(path)} "
        f"status={status} sent_bytes={sent_bytes} duration_us={duration_us} "
        f"cache={_word(cache)} sid={_word(sid)} transport={transport}"
    )


def json_fields(
    client: str | None,
    method: str,
    path: str,
    status: int,
    sent_bytes: int,
    duration_us: int,
    cache: str | None,
    sid: str | None,
    transport: str,
) -> str:
    """An access line's members after ``pid`` (the JSON format): the same text
    ``json.dumps`` writes for them (:class:`cadenza.origin.logs.JsonFormatter`),
    built without it for the common strings, which need no escaping."""
    return (
        f'"message": {_json_string(f"{method} {path} {status}")}, '
        f'"client": {_json_value(client)}, "method": {_json_string(method)}, '
        f'"path": {_json_string(path)}, "status": {status}, "sent_bytes": {sent_bytes}, '
        f'"duration_us": {duration_us}, "cache": {_json_value(cache)}, '
        f'"sid": {_json_value(sid)}, "transport": "{transport}"}}'
    )


def _word(value: str | None) -> str:
    """A bare word when it is one (printable ASCII, no space, quote or
    backslash); else JSON-quoted, so a line splits unambiguously; ``-`` for none."""
    if value is None:
        return "-"
    if (
        value.isascii()
        and value.isprintable()
        and value
        and " " not in value
        and '"' not in value
        and "\\" not in value
    ):
        return value
    return json.dumps(value)


def _json_string(value: str) -> str:
    """``json.dumps(value, ensure_ascii=False)``: a printable string without a
    quote or backslash is written as it is."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


def _json_value(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_target(target: str) -> str:
    """A request target fit for a log: the signed-URL token segment and the
    values of credential-like query arguments redacted, cut at
    :data:`MAX_PATH_CHARS`."""
    if "?" not in target and len(target) <= MAX_PATH_CHARS and not target.startswith(TOKEN_PREFIX):
        return target  # the common case, a plain path: as it is
    path, question, query = target.partition("?")
    if path.startswith(TOKEN_PREFIX):
        _token, slash, rest = path[len(TOKEN_PREFIX) :].partition("/")
        path = f"{TOKEN_PREFIX}{REDACTED}{slash}{rest}"
    if query and any(_is_secret(part.partition("=")[0]) for part in query.split("&")):
        query = "&".join(
            f"{name}={REDACTED}" if _is_secret(name) else f"{name}{equals}{value}"
            for name, equals, value in (part.partition("=") for part in query.split("&"))
        )
    redacted = path + question + query
    if len(redacted) > MAX_PATH_CHARS:
        return redacted[:MAX_PATH_CHARS] + "..."
    return redacted


def _cmcd_sid(payload: str) -> str | None:
    for member in payload.split(","):
        key, _, value = member.partition("=")
        if key.strip() == "sid":
            return value.strip().strip('"')[:MAX_SID_CHARS] or None
    return None


def sid_of(query: str, cmcd_session: str | None = None) -> str | None:
    """The session a request names: ``?sid=``, else the CMCD ``sid`` key of the
    ``CMCD`` query argument or of the ``CMCD-Session`` header (CTA-5004)."""
    if "sid" in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == "sid":
                return value[:MAX_SID_CHARS] or None
            if name == "CMCD":
                found = _cmcd_sid(value)
                if found is not None:
                    return found
    if cmcd_session:
        return _cmcd_sid(cmcd_session)
    return None


class AccessLog:
    """Writes access lines; one per process.

    With the origin's own log (:func:`cadenza.origin.logs.configure_logging`)
    taking them alone, a line is formatted here with the time, level, logger
    and pid its format writes and handed to the log's writer (one ``write``
    per event-loop turn): about 2 µs, where a ``LogRecord`` through a handler
    and a ``Formatter`` costs ~25 µs.  Else (a test capturing them, an
    application with handlers of its own) each line is a ``LogRecord``."""

    def __init__(self, logger: logging.Logger, handler: LineHandler | None = None) -> None:
        self.logger = logger
        self._writer = None if handler is None else handler.writer
        self._json = handler is not None and handler.log_format is LogFormat.JSON
        self._pid = os.getpid()
        self._second = -1
        self._stamp = ""  # the second's text; milliseconds are added per line

    def write(self, record: AccessRecord) -> None:
        """The line of ``record``."""
        self._line(
            record.client, record.method, record.path, record.status, record.sent_bytes,
            record.duration_us, record.cache, record.sid, record.transport.value,
        )  # fmt: skip

    def _line(
        self,
        client: str | None,
        method: str,
        path: str,
        status: int,
        sent_bytes: int,
        duration_us: int,
        cache: str | None,
        sid: str | None,
        transport: str,
    ) -> None:
        writer = self._writer
        if writer is None:
            self._log(
                AccessRecord(
                    client, method, path, status, sent_bytes, duration_us, cache, sid,
                    Transport(transport),
                )
            )  # fmt: skip
            return
        now_s = time.time()
        second = int(now_s)
        if second != self._second:
            self._tick(second)
        milliseconds = _MILLISECONDS[int((now_s - second) * 1000)]
        if self._json:
            writer.write(
                f"{self._stamp}.{milliseconds}Z"
                f'", "level": "INFO", "logger": "{ACCESS_LOGGER}", "pid": {self._pid}, '
                + json_fields(
                    client, method, path, status, sent_bytes, duration_us, cache, sid, transport
                )
                + "\n"
            )
        else:
            writer.write(
                f"{self._stamp},{milliseconds} {ACCESS_LOGGER} INFO "
                + text_fields(
                    client, method, path, status, sent_bytes, duration_us, cache, sid, transport
                )
                + "\n"
            )

    def _tick(self, second: int) -> None:
        """The new second's text, as the format writes it: logging's ``asctime``
        (local time) in text, ISO 8601 UTC in JSON."""
        self._second = second
        if self._json:
            self._stamp = '{"time": "' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        else:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))

    def _log(self, record: AccessRecord) -> None:
        """The line as a ``LogRecord``, at INFO (made here: ``Logger.info`` would
        also walk the stack for the caller's file and line)."""
        line = self.logger.makeRecord(
            self.logger.name,
            logging.INFO,
            __file__,
            0,
            "%s",
            (record,),
            None,
            extra={"access_fields": record.fields},
        )
        self.logger.handle(line)

    def fast(
        self,
        head: bytes,
        answer_head: bytes,
        body_bytes: int,
        client: str | None,
        duration_s: float,
    ) -> None:
        """A fast-transport answer: ``head`` is the request's, ``answer_head`` the
        response's (its status line and fields)."""
        request_line = head[: head.find(b"\r\n")].decode("latin-1")
        method, _, rest = request_line.partition(" ")
        target = rest.rpartition(" ")[0]
        start = answer_head.find(_CACHE_FIELD)
        cache = None
        if start >= 0:
            start += len(_CACHE_FIELD)
            cache = answer_head[start : answer_head.find(b"\r\n", start)].decode("latin-1")
        self._line(
            client,
            method,
            redact_target(target),
            int(answer_head[9:12]),
            len(answer_head) + body_bytes,
            round(duration_s * 1e6),
            cache,
            sid_of(target.partition("?")[2]) if "?" in target else None,
            "fast",
        )

    def aiohttp(
        self, request: BaseRequest, response: web.StreamResponse, duration_s: float
    ) -> None:
        """An aiohttp answer; ``request.remote`` is the client's already
        (:func:`cadenza.origin.proxies.client_middleware`)."""
        target = request.raw_path
        self._line(
            request.remote,
            request.method,
            redact_target(target),
            response.status,
            _sent_bytes(request, response),
            round(duration_s * 1e6),
            response.headers.get("X-Cadenza-Cache"),
            sid_of(target.partition("?")[2], request.headers.get("CMCD-Session")),
            "aiohttp",
        )


def _sent_bytes(request: BaseRequest, response: web.StreamResponse) -> int:
    """What aiohttp wrote for ``response``, head included. aiohttp counts only what goes
    through its writer, so a file it sent with ``sendfile(2)`` (a :class:`FileResponse`,
    uncompressed) is added at its Content-Length."""
    sent = response.body_length
    if (
        isinstance(response, web.FileResponse)
        and not web_fileresponse.NOSENDFILE
        and not response.compression
        and request.method != "HEAD"
        and response.status in (200, 206)
    ):
        sent += response.content_length or 0
    return sent


def access_log_for(enabled: bool) -> AccessLog | None:
    """The access log, or None when it is off (``access_log = false``, or a
    ``log_level`` above INFO)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not enabled or not logger.isEnabledFor(logging.INFO):
        return None
    return AccessLog(logger, direct_writer(logger))


def aiohttp_access_logger(access: AccessLog) -> type[AbstractAccessLogger]:
    """aiohttp's ``access_log_class`` writing to ``access``.  A request the
    application never saw (it did not parse: aiohttp's own 400) is not
    written here: :class:`cadenza.origin.logs.RequestErrorLog` logs it,
    rate-limited."""

    class _AccessLogger(AbstractAccessLogger):
        def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
            if getattr(request, "_match_info", None) is None:
                return
            access.aiohttp(request, response, time)

    return _AccessLogger
