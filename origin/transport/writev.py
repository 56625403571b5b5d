"""A head and its body sent where they are: one ``writev`` on the socket while
the transport holds nothing, instead of the transport's ``writelines``, which
joins them into a new object (a 64 KB copy per segment) before its ``send``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Final

IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


def unsent(pieces: Sequence[bytes | memoryview], sent_bytes: int) -> list[bytes | memoryview]:
    """What is left of ``pieces`` after the first ``sent_bytes`` went out."""
    for index, piece in enumerate(pieces):
        if sent_bytes < len(piece):
            return [memoryview(piece)[sent_bytes:], *pieces[index + 1 :]]
        sent_bytes -= len(piece)
    return []


def send_pieces(
    transport: asyncio.Transport, fd: int, pieces: Sequence[bytes | memoryview]
) -> None:
    """``transport.writelines(pieces)`` without its copy.  While nothing is queued
    in the transport, one ``writev`` on its socket ``fd`` sends the pieces where
    they are (order is kept: the transport holds nothing that should go first);
    what the socket does not take goes through the transport as usual (``fd``
    -1: no socket of its own, always the transport)."""
    if (
        fd >= 0
        and len(pieces) <= IOV_MAX
        and not transport.get_write_buffer_size()
        and not transport.is_closing()
    ):
        try:
            sent_bytes = os.writev(fd, pieces)
        except OSError:  # full (EAGAIN) or broken: the transport takes it from here
            sent_bytes = 0
        if sent_bytes:
            rest = unsent(pieces, sent_bytes)
            if rest:
                transport.writelines(rest)
            return
    transport.writelines(pieces)
