#!/bin/sh
# publish.sh DIR s3://bucket/prefix: upload the tracks `cadenza package --out DIR` wrote.
#
# Run with the aws CLI (the amazon/aws-cli image) by deploy/compose.yaml and by the
# packaging Job in deploy/k8s/package-job.yaml.  AWS_ENDPOINT_URL and the AWS_* credentials
# come from the environment.  The upload keeps the packager's order: media segments and init
# segments first, then playlists and MPDs, then presentation.json, so that the origin never
# finds a manifest naming a segment that is not there yet.  Unfinished work folders
# (.cadenza-tmp-*) and the batch report are not content and are not uploaded.
set -eu
src=${1:?usage: publish.sh DIR s3://bucket/prefix}
dest=${2:?usage: publish.sh DIR s3://bucket/prefix}
skip="--exclude .cadenza-tmp-* --exclude */.cadenza-tmp-* --exclude batch-report.json"

set -f  # the patterns above go to aws as they are, not through the shell's globbing
# shellcheck disable=SC2086
aws s3 sync "$src" "$dest" $skip --exclude '*.m3u8' --exclude '*.mpd' --exclude '*presentation.json'
# shellcheck disable=SC2086
aws s3 sync "$src" "$dest" $skip --exclude '*presentation.json'
# shellcheck disable=SC2086
aws s3 sync "$src" "$dest" $skip
echo "publish.sh: $src -> $dest"
