"""How requests reach the answer core (:mod:`cadenza.origin.core`): the fast
transport for hot media files (:mod:`.fast`, :mod:`.parse`, :mod:`.responder`),
and aiohttp's server behind it (:mod:`.aio`)."""
