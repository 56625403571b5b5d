#!/bin/sh
# publish.sh MASTERS s3://BUCKET/PREFIX [cadenza package options]: package masters (files,
# folders, s3:// objects) straight into an origin's S3 root.
#
# It is `cadenza package MASTERS --out s3://BUCKET/PREFIX`: each track is packaged in a
# local staging folder, then uploaded by the packager itself, media and init segments
# first, playlists and MPDs after them, presentation.json last, each object with the
# Content-Type and Cache-Control the origin serves, so that the origin never finds a
# manifest naming a segment that is not there yet.  Tracks already complete there are
# skipped, so a rerun resumes; nothing unfinished (.cadenza-tmp-*) is ever uploaded.
#
# deploy/compose.yaml runs it in the cadenza image (the `package` service).  The Kubernetes
# packaging Job (deploy/k8s/package-job.yaml) does not use it: each of its pods runs
# `cadenza package --catalogue ... --shard i/N --out $(CADENZA_ROOT)` directly.
# AWS_ENDPOINT_URL and the AWS_* credentials come from the environment.
set -eu
usage="usage: publish.sh MASTERS s3://BUCKET/PREFIX [cadenza package options]"
src=${1:?$usage}
dest=${2:?$usage}
shift 2
case "$dest" in
  s3://?*/*) ;;
  *) echo "publish.sh: $dest is not s3://BUCKET/PREFIX" >&2; exit 2 ;;
esac
exec cadenza package "$src" --out "$dest" "$@"
