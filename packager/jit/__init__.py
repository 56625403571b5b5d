"""Just-in-time packaging: a track's manifests planned from a cheap probe of its source,
and any one segment of any rung encoded alone, on request, to play gaplessly next to
its neighbours and next to the batch packager's segments (:mod:`cadenza.packager.jit.plan`,
:mod:`cadenza.packager.jit.cut`).  Clear media only, separate-segment layout only."""
