"""Request heads parsed for the fast transport: one httptools (llhttp) parser
per connection, and an allowlist of the header fields it may answer with.

A head is the fast transport's only when every field is on the allowlist and
appears at most once, exactly one ``Host`` is sent (RFC 9112 3.2), there is
no ``Content-Length``, ``Transfer-Encoding``, ``Upgrade`` or
``Proxy-Connection`` (no body, no protocol switch: RFC 9112 6, RFC 9110 7.8),
``Connection`` is ``keep-alive`` if sent, and the target has no fragment.
Anything else, including every head aiohttp refuses, is aiohttp's: the
connection is handed over with the head's bytes, so framing and verdicts are
aiohttp's own."""

from __future__ import annotations

from typing import Final

import httptools

from cadenza.origin.core.request import Handover

# Request fields the fast transport answers with: those it reads, and those
# that never change the answer (browsers', players' and CDNs' usual ones).
# Lower case, as compared.
READ_FIELDS: Final = {
    b"accept-encoding": "accept_encoding",
    b"if-none-match": "if_none_match",
    b"if-modified-since": "if_modified_since",
    b"range": "range",
    b"if-range": "if_range",
    b"ect": "ect",  # the session's network key (origin.sessions.network_key_for)
    b"save-data": "save_data",  # a decided segment's cap (origin.deciding)
    # Believed only from a trusted proxy's connection (origin.proxies).
    b"x-forwarded-for": "x_forwarded_for",
    b"forwarded": "forwarded",
}
IGNORED_FIELDS: Final = frozenset(
    {
        b"host",
        b"connection",
        b"user-agent",
        b"accept",
        b"accept-language",
        b"origin",
        b"referer",
        b"cache-control",
        b"pragma",
        b"dnt",
        b"priority",
        b"sec-fetch-dest",
        b"sec-fetch-mode",
        b"sec-fetch-site",
        b"sec-fetch-user",
        b"sec-ch-ua",
        b"sec-ch-ua-mobile",
        b"sec-ch-ua-platform",
        b"sec-gpc",
        b"accept-charset",
        b"keep-alive",
        b"upgrade-insecure-requests",
        b"x-playback-session-id",  # AVPlayer (Safari, iOS) on every HLS request
        b"icy-metadata",  # ExoPlayer's audio requests
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-proto",
        b"x-real-ip",
        b"true-client-ip",
        b"x-request-id",
        b"x-request-start",
        b"via",
        b"cdn-loop",
        b"cf-connecting-ip",
        b"cf-ray",
        b"cf-visitor",
        b"x-amz-cf-id",
    }
)
# Each allowed field: its bit in a head's ``seen`` mask (no allocation per
# head), and the attribute it is read into ("" for none).
_FIELDS: Final = {
    name: (1 << index, READ_FIELDS.get(name, ""))
    for index, name in enumerate(sorted(IGNORED_FIELDS | READ_FIELDS.keys()))
}
_HOST_BIT: Final = _FIELDS[b"host"][0]
_CONNECTION: Final = b"connection"


class HeadFields:
    """httptools callbacks for one request head: the fields read, and whether
    the head is off the allowlist."""

    __slots__ = (
        "accept_encoding",
        "complete",
        "ect",
        "fields",
        "forwarded",
        "handover",
        "if_modified_since",
        "if_none_match",
        "if_range",
        "range",
        "save_data",
        "seen",
        "url",
        "x_forwarded_for",
    )

    def __init__(self) -> None:
        self.on_message_begin()

    def on_message_begin(self) -> None:
        self.url = b""
        self.fields = 0
        self.seen = 0  # the bits (_FIELDS) of the fields sent
        self.handover: Handover | None = None
        self.complete = False
        self.accept_encoding: str | None = None
        self.if_none_match: str | None = None
        self.if_modified_since: str | None = None
        self.range: str | None = None
        self.if_range: str | None = None
        self.ect: str | None = None
        self.save_data: str | None = None
        self.x_forwarded_for: str | None = None
        self.forwarded: str | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        lowered = name.lower()
        entry = _FIELDS.get(lowered)
        if entry is None or self.seen & entry[0]:
            self.handover = Handover.HEADER  # aiohttp folds, refuses or reads it
            return
        self.seen |= entry[0]
        if entry[1]:
            setattr(self, entry[1], value.decode("latin-1"))
        elif lowered == _CONNECTION and value.strip().lower() != b"keep-alive":
            self.handover = Handover.HEADER

    def on_message_complete(self) -> None:
        self.complete = True


class HeadParser:
    """One connection's parser: heads are fed one complete head at a time."""

    __slots__ = ("_parser", "fields", "max_fields")

    def __init__(self, max_fields: int) -> None:
        self.fields = HeadFields()
        self._parser = httptools.HttpRequestParser(self.fields)
        self.max_fields = max_fields

    def parse(self, head: bytes) -> HeadFields | Handover:
        """The head's fields, if it is a complete HTTP/1.1 head on the
        allowlist; else why not.  A refused head ends the fast transport's
        part in the connection: the parser is not used again."""
        fields = self.fields
        try:
            self._parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            return Handover.UPGRADE
        except httptools.HttpParserError:
            return Handover.MALFORMED
        if not fields.complete:  # it announced a body: the parser waits for it
            return Handover.BODY
        if fields.handover is not None:
            return fields.handover
        if not fields.seen & _HOST_BIT:
            return Handover.HEADER
        if fields.fields > self.max_fields:
            return Handover.OVERSIZED
        if self._parser.get_http_version() != "1.1":
            return Handover.VERSION
        if b"#" in fields.url:
            return Handover.TARGET
        return fields

    def is_get(self) -> bool:
        return self._parser.get_method() == b"GET"
