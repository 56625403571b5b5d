"""The fast transport's cut-off: handing a live connection, mid-stream, to an aiohttp
``RequestHandler`` that keeps it for good (:mod:`cadenza.origin.transport.fast`)."""

from __future__ import annotations

import asyncio


def cut_over(
    transport: asyncio.Transport,
    handler: asyncio.Protocol,
    pending: bytes,
    *,
    write_paused: bool,
    eof: bool,
) -> None:
    """Give ``transport`` to ``handler`` as if it had been its protocol from the start:
    aiohttp's own write-buffer limits, reading resumed, the write pause and the end of
    input it would have seen, and ``pending`` (every byte not yet answered) to parse."""
    transport.set_write_buffer_limits()  # aiohttp's own (asyncio's defaults)
    transport.set_protocol(handler)
    handler.connection_made(transport)
    if not transport.is_closing():
        transport.resume_reading()  # aiohttp reads from here on
    if write_paused:
        handler.pause_writing()  # it will see resume_writing
    if pending:
        handler.data_received(pending)
    if eof:
        handler.eof_received()
