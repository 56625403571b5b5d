"""How requests reach the answer core (:mod:`cadenza.origin.core`): the fast
transport for hot media files (:mod:`.fast`, :mod:`.parse`, :mod:`.responder`),
and aiohttp's server behind it (:mod:`.aio`).

What the fast transport answers.  A plain request for a hot media file
(:mod:`.fast`).  A request whose query names a session (``CMCD`` and ``sid`` arguments, as
hls.js and dash.js send CMCD in query mode, CTA-5004) or filters renditions
(``codec``, ``min_bitrate``, ``max_bitrate``) is answered too, by the
answer core the aiohttp path uses (``core.answer.choose_object``): its CMCD
folded into the session, then a filtered and steered master playlist or MPD,
or the file with CMSD, private.  Everything such an answer needs that can
fail (loads, the filter) is done before the session is touched, so one
handed over is never folded in twice.

Origin-decided playback (``docs/players.md``) is answered too, by the
same core: a group's media playlist (``group-<id>/playlist.m3u8?sid=``) and
each decided segment (``group-<id>/seg-NNNNN.m4s?sid=&CMCD=``), whose
``302`` to the chosen rung (or its bytes: ``abr_delivery = direct`` or ``adaptive``)
costs no handover, and the ``?abr=origin`` manifests; the connection's peer
and socket go with the request, for the TCP delivery rate of the previous
response.

Every other request is handed, together with every byte not yet answered, to
an aiohttp ``RequestHandler`` that takes the connection over for good.  The
fast transport answers an allowlist, not a denylist: a head whose fields are
all on the allowlist of :mod:`cadenza.origin.transport.parse`, each at most
once, with exactly one ``Host``, HTTP/1.1, no body and no fragment in the
target (see :mod:`cadenza.origin.transport.parse`); a path of a media file
that no other route answers and ``safe_key`` accepts; no query but a
session's or a filter's, and no ``Range`` with one; a satisfiable range; no
manifest when content steering is configured (those are always rendered); no
MPD of an encrypted track (rendered per viewer with a licence URL from its
``Host``, which this path does not read: the answer core raises
``ViewerManifestError``, a ``load_failed`` handover, and never loads the
stored MPD, so no hot copy of it exists to answer from here); a
load that succeeds (404, 503, too large: aiohttp answers or streams it, with
its own error mapping).  An exception while answering hands over too.  So the
fast path only ever answers what the full path would have answered
identically, never answers an error, and leaves every framing decision
(bodies, ``Content-Length`` with ``Transfer-Encoding``, upgrades) to aiohttp.
"""
