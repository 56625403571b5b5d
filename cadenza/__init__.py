"""cadenza: an HLS/DASH packager and origin server for music.

One import package over the project's top-level folders (see pyproject.toml's
``package-dir``): ``cadenza.manifests`` (the pure presentation model and its
renderers), ``cadenza.abr`` (pure adaptive-bitrate decisions), ``cadenza.store``
(the track store, local and S3), ``cadenza.packager`` and ``cadenza.origin``.
The ``cadenza`` command is :mod:`cadenza.cli`.
"""
