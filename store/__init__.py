"""The track store: where packaged tracks live, local or S3, with one read face (the
origin) and one write face (the packager), one definition of a complete track and one
atomic-write rule.  Imports only :mod:`cadenza.manifests` from the project."""
