"""Live tracks at the origin (issue 20): a track with ``<track>/live.json``
(written by ``cadenza live``, the model of :mod:`cadenza.manifests.live`) has its
LL-HLS playlists and dynamic MPD rendered per request, with blocking playlist
reload (:mod:`.blocking`), from one watcher per track (:mod:`.watch`); its open
segment is streamed chunked from one producer (:mod:`.open_segment`); the
answers are :mod:`.serve`'s, on the aiohttp path."""
