"""The track store: where packaged tracks live, local or S3, with one read face (the
origin's) and one write face (the packager's), one definition of a complete track and
one atomic-write rule.  Imports only :mod:`cadenza.manifests` from the project.

- :mod:`~cadenza.store.api`: the two faces, :class:`ObjectInfo`, :class:`StoredObject`;
- :mod:`~cadenza.store.complete`: what a complete track is;
- :mod:`~cadenza.store.atomic`: atomic files and track folders on a local disk;
- :mod:`~cadenza.store.local`: both faces over a local folder;
- :mod:`~cadenza.store.s3url`, :mod:`~cadenza.store.s3client`: ``s3://`` URLs, the
  client factory (endpoint, timeouts, retries) and botocore's errors mapped;
- :mod:`~cadenza.store.s3read`: the S3 read face; :mod:`~cadenza.store.s3upload` and
  :mod:`~cadenza.store.s3write`: the S3 write face, in the documented upload order;
- :mod:`~cadenza.store.errors`: what all of them raise.
"""
