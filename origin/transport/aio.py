"""The aiohttp transport's side of the answer core: an aiohttp request
described once as a :class:`MediaRequest`, and an object's answer made a
``web.Response`` with the head the fast transport sends."""

from __future__ import annotations

import time

from aiohttp import web
from multidict import CIMultiDict

from cadenza.origin.core.heads import ObjectChoice, Redirect, redirect_reply, reply_for
from cadenza.origin.core.request import MediaRequest, accepts_gzip
from cadenza.origin.core.routes import route_class
from cadenza.origin.core.validators import plan_for
from cadenza.origin.objects import HEAD_STYLE
from cadenza.origin.tcp_info import connection_of


def describe_media_request(request: web.Request, key: str) -> MediaRequest:
    """``request`` for the file at ``key``: the fields the core reads, each
    read once (a repeated Accept-Encoding is one list, RFC 9110 5.3)."""
    headers = request.headers
    query = request.query
    transport = request.transport
    connection = (
        None
        if transport is None
        else connection_of(transport.get_extra_info("peername"), transport.get_extra_info("socket"))
    )
    return MediaRequest(
        key,
        route_class(request.path).value,
        request.method == "GET",
        accepts_gzip(", ".join(headers.getall("Accept-Encoding", ()))),
        headers.get("If-None-Match"),
        headers.get("If-Modified-Since"),
        headers.get("Range"),
        headers.get("If-Range"),
        time.perf_counter(),
        {name: query[name] for name in query} if query else None,
        headers,
        request.remote,
        if_match=headers.get("If-Match"),
        if_unmodified_since=headers.get("If-Unmodified-Since"),
        connection=connection,
    )


def object_response(
    request: web.Request, asked: MediaRequest, choice: ObjectChoice | Redirect
) -> web.Response:
    """The reply of ``core.heads.reply_for`` (``redirect_reply`` for a decided
    segment) as a ``web.Response``."""
    style = request.app[HEAD_STYLE]
    if isinstance(choice, Redirect):
        reply = redirect_reply(style, choice, asked.is_get)
    else:
        reply = reply_for(style, choice, plan_for(choice.obj, asked))
    headers = CIMultiDict(reply.fields)
    if reply.body is None:
        return web.Response(status=reply.status, headers=headers)
    body = reply.body if isinstance(reply.body, bytes) else bytes(reply.body)
    # aiohttp sends the headers (Content-Length included) but no body for HEAD.
    return web.Response(status=reply.status, body=body, headers=headers)
