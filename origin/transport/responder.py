"""The fast transport's answers: a complete request head in, the head and body
to send out (or what to load first, or a :class:`Handover` reason).

The plain hit (a hot object, no validators, no ``Range``) is a lookup of a
head rendered once per object, encoding and cache result; every other answer
is decided by ``plan_object_answer`` and made a reply by
``core.heads.reply_for``, as on the aiohttp path, then rendered to bytes
(``core.heads.render_head``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import Final

from aiohttp import web
from cachetools import LRUCache

from cadenza.origin.auth import TOKEN_PREFIX
from cadenza.origin.cache import CachedObject
from cadenza.origin.core.answer import choose_object
from cadenza.origin.core.heads import (
    SERVER_NAME,
    ObjectChoice,
    Redirect,
    object_body,
    redirect_reply,
    render_head,
    reply_for,
)
from cadenza.origin.core.request import (
    NO_FIELDS,
    Handover,
    MediaRequest,
    accepts_gzip,
    query_arguments,
)
from cadenza.origin.core.routes import RouteClass, route_class
from cadenza.origin.core.validators import plan_for, plan_object_answer
from cadenza.origin.errors import OriginError, RangeNotSatisfiableError
from cadenza.origin.keys import CACHE, METRICS, SETTINGS
from cadenza.origin.objects import HEAD_STYLE
from cadenza.origin.paths import safe_key
from cadenza.origin.tcp_info import Connection
from cadenza.origin.transport.parse import HeadParser
from cadenza.store.api import Provenance

_TOKEN_PATH: Final = TOKEN_PREFIX.encode()  # signed URLs: aiohttp strips or checks the token
# Rendered 200 heads kept per (object, gzip, cache result) (an entry is ~400
# bytes; rebuilt when the cached object changes, e.g. after a repackage or a
# manifest refresh).
_HEADS_KEPT: Final = 4096
# Request paths whose key and route are remembered.
_KEYS_KEPT: Final = 4096
# Accept-Encoding values read (clients send a handful of spellings).
_ENCODINGS_KEPT: Final = 256

Answer = tuple[bytes, bytes | memoryview | None]  # head, body (None for HEAD)


def _session_fields(ect: str | None, save_data: str | None) -> Mapping[str, str]:
    """The request fields a session reads (client hints), as a mapping."""
    if ect is None and save_data is None:
        return NO_FIELDS
    fields = {} if ect is None else {"ECT": ect}
    if save_data is not None:
        fields["Save-Data"] = save_data
    return fields


class HotResponder:
    """Answers one complete request head from the hot cache, says what to load
    first, or says it cannot (hand the request to aiohttp).  One per server,
    shared by its connections (each has its own :class:`HeadParser`).

    :meth:`answer` does no I/O; :meth:`load` awaits the cache (and storage).
    """

    def __init__(self, app: web.Application) -> None:
        settings = app[SETTINGS]
        self._app = app
        self._cache = app[CACHE]
        self._metrics = app[METRICS]
        self.max_head_bytes: Final = settings.max_header_bytes
        self.max_fields: Final = settings.max_headers
        # Content steering puts pathways into every master playlist and MPD.
        self._manifests = not settings.pathways
        self._style = app[HEAD_STYLE]
        # First path segments that routes other than the file catch-all answer.
        self._routed = frozenset(
            resource.canonical.lstrip("/").split("/", 1)[0]
            for resource in app.router.resources()
            if resource.canonical != r"/{path}"
        )
        # (id(object), gzip flag, cache result) -> (object, head, gzip copy sent).
        # The flag is the request's Accept-Encoding in _hit and the decided
        # encoding in _respond: the same head either way (without a gzip copy
        # both are the identity head).  The object in the entry keeps its id.
        self._heads: LRUCache[tuple[int, bool, str], tuple[CachedObject, bytes, bool]] = LRUCache(
            maxsize=_HEADS_KEPT
        )
        self._gzip_by_header: dict[str | None, bool] = {None: False}
        # Rendered 302 heads (and bodies) of decided segments, per (location,
        # X-Cadenza-Cache, GET): the sessions of one track are sent to the same few.
        self._redirects: dict[tuple[str, str, bool], Answer] = {}
        self._keys: dict[bytes, tuple[str, str, bool] | None] = {}
        self.refusal = Handover.ERROR  # why the last request was not answered
        self._date_s = -1
        self._date_lines = b""
        # Hits not yet in the metrics, per route (counted at the end of the loop turn).
        self._batch_latencies_s: dict[str, list[float]] = {}
        self._batch_bytes: dict[str, int] = {}

    def _tail(self) -> bytes:
        """``Date`` (this second's) and ``Server``, as aiohttp writes them, and the blank line."""
        now_s = int(time.time())
        if now_s != self._date_s:
            self._date_s = now_s
            self._date_lines = (
                f"Date: {formatdate(now_s, usegmt=True)}\r\nServer: {SERVER_NAME}\r\n\r\n"
            ).encode("latin-1")
        return self._date_lines

    def _accepts_gzip(self, header: str | None) -> bool:
        known = self._gzip_by_header.get(header)
        if known is None:
            known = accepts_gzip(header)
            if len(self._gzip_by_header) >= _ENCODINGS_KEPT:
                self._gzip_by_header = {None: False}
            self._gzip_by_header[header] = known
        return known

    def count_handover(self, reason: Handover) -> None:
        self._metrics.fast_path_handovers.labels(reason.value).inc()

    def _key(self, url: bytes) -> tuple[str, str, bool] | None:
        """(storage key, metrics route, whether ``safe_key`` accepts the key) for
        a URL this path serves, else None; remembered per URL (players ask for
        the same few again and again)."""
        try:
            return self._keys[url]
        except KeyError:
            pass
        found = self._find_key(url)
        if len(self._keys) >= _KEYS_KEPT:
            self._keys.clear()
        self._keys[url] = found
        return found

    def _find_key(self, url: bytes) -> tuple[str, str, bool] | None:
        if url.startswith(_TOKEN_PATH):
            return None
        path = url.decode("latin-1")
        route = route_class(path)
        if route is not RouteClass.SEGMENT and (
            route is not RouteClass.MANIFEST or not self._manifests
        ):
            return None
        key = path[1:]
        if key.split("/", 1)[0] in self._routed or "/" not in key:
            return None
        try:  # the check the full path makes
            valid = safe_key(path) == key
        except OriginError:
            valid = False
        return key, route.value, valid

    def answer(
        self,
        head: bytes,
        parser: HeadParser,
        remote: str | None = None,
        connection: Connection | None = None,
    ) -> Answer | MediaRequest | None:
        """The answer to a request head, a :class:`MediaRequest` to load first,
        or None (:attr:`refusal` says why).  ``parser``: the connection's;
        ``remote``: the peer's address, a session's network key;
        ``connection``: the connection's, for a decided segment."""
        started_s = time.perf_counter()
        if len(head) > self.max_head_bytes:
            self.refusal = Handover.OVERSIZED
            return None
        if not head.startswith((b"GET /", b"HEAD /")):
            self.refusal = Handover.METHOD
            return None
        state = parser.parse(head)
        if isinstance(state, Handover):
            self.refusal = state
            return None
        path, question, query = state.url.partition(b"?")
        found = self._key(path)
        if found is None:
            self.refusal = Handover.PATH
            return None
        key, route, valid = found
        arguments = None
        if question:
            arguments = query_arguments(query)
            if arguments is None or state.range is not None:
                self.refusal = Handover.QUERY
                return None
        is_get = parser.is_get()
        gzip = self._accepts_gzip(state.accept_encoding)
        # A query's answer is loaded (and counted) by load_object.
        obj = self._cache.hot(key) if arguments is None else None
        plain = (
            state.if_none_match is None and state.if_modified_since is None and state.range is None
        )
        if obj is not None and plain:
            return self._hit(obj, route, is_get, gzip, started_s)
        asked = MediaRequest(
            key,
            route,
            is_get,
            gzip,
            state.if_none_match,
            state.if_modified_since,
            state.range,
            state.if_range,
            started_s,
            arguments,
            _session_fields(state.ect, state.save_data),
            remote,
            connection=connection,
        )
        if obj is not None:
            return self._respond(ObjectChoice(obj, "hit"), asked)
        if valid or self._cache.peek(key) is not None:  # cached keys passed safe_key already
            return asked
        self.refusal = Handover.PATH
        return None

    def _hit(
        self,
        obj: CachedObject,
        route: str,
        is_get: bool,
        accepts_gzip: bool,
        started_s: float,
    ) -> Answer:
        """The common case (no validators, no Range): a head rendered once per
        object and encoding, metrics counted per loop turn."""
        entry = self._heads.get((id(obj), accepts_gzip, "hit"))
        if entry is None or entry[0] is not obj:
            answer = plan_object_answer(
                obj,
                accepts_gzip=accepts_gzip,
                range_header=None,
                if_range=None,
                if_none_match=None,
                if_modified_since=None,
            )
            head = render_head(reply_for(self._style, ObjectChoice(obj, "hit"), answer))
            entry = (obj, head, answer.gzip)
            self._heads[(id(obj), accepts_gzip, "hit")] = entry
        body = object_body(obj, entry[2]) if is_get else None
        if obj.provenance is not Provenance.STORED:  # a just-in-time object, hot
            self._metrics.jit.cache_answered(obj.provenance, "hit")
        if not self._batch_latencies_s:
            asyncio.get_running_loop().call_soon(self._count_batch)
        self._batch_latencies_s.setdefault(route, []).append(time.perf_counter() - started_s)
        if body is not None:
            self._batch_bytes[route] = self._batch_bytes.get(route, 0) + len(body)
        return entry[1] + self._tail(), body

    async def load(self, asked: MediaRequest) -> Answer | None:
        """Load the object into the cache, then answer; None when the load fails
        (aiohttp then answers the request, with its own error mapping)."""
        try:
            choice = await choose_object(self._app, asked, fold_on_failure=False)
        except Exception:  # not found, storage down, too large, a bad filter: aiohttp's
            self.refusal = Handover.LOAD_FAILED
            return None
        return self._respond(choice, asked)

    def _respond(self, choice: ObjectChoice | Redirect, asked: MediaRequest) -> Answer | None:
        """Any answer but the plain hit, decided by core.validators.plan_object_answer
        as on the aiohttp path; None for an unsatisfiable range (aiohttp's 416).
        A decided segment's redirect is ``core.heads.redirect_reply``'s."""
        if isinstance(choice, Redirect):
            redirect_key = (choice.location, choice.how, asked.is_get)
            known = self._redirects.get(redirect_key)
            if known is None:
                reply = redirect_reply(self._style, choice, asked.is_get)
                known = (render_head(reply), reply.body)
                if len(self._redirects) >= _HEADS_KEPT:
                    self._redirects.clear()
                self._redirects[redirect_key] = known
            self._metrics.request_done(
                asked.route, 302, choice.how, 0, time.perf_counter() - asked.started_s
            )
            return known[0] + self._tail(), known[1]
        obj = choice.obj
        try:
            answer = plan_for(obj, asked)
        except RangeNotSatisfiableError:
            self.refusal = Handover.RANGE
            return None
        reply = reply_for(self._style, choice, answer)
        sent = reply.body if asked.is_get else None
        self._metrics.request_done(
            asked.route,
            reply.status,
            choice.how,
            None if sent is None else len(sent),
            time.perf_counter() - asked.started_s,
        )
        plain = choice.control is None and choice.cmsd is None and choice.vary is None
        if reply.status == 200 and plain:
            # Rendered once per object, encoding and cache result (a steered
            # manifest is one object per guidance shape).
            cache_key = (id(obj), answer.gzip, choice.how)
            entry = self._heads.get(cache_key)
            if entry is None or entry[0] is not obj:
                entry = (obj, render_head(reply), answer.gzip)
                self._heads[cache_key] = entry
            head = entry[1]
        else:
            head = render_head(reply)
        return head + self._tail(), sent

    def _count_batch(self) -> None:
        """The metrics of this loop turn's hits, in one go: per answer, each
        counter increment costs as much as a tenth of the answer itself (a
        locked, and with ``--workers`` memory-mapped, write)."""
        latencies, self._batch_latencies_s = self._batch_latencies_s, {}
        sizes, self._batch_bytes = self._batch_bytes, {}
        for route, latencies_s in latencies.items():
            self._metrics.hits_done(route, len(latencies_s), sizes.get(route, 0), latencies_s)
