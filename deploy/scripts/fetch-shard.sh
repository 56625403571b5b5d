#!/bin/sh
# fetch-shard.sh DIR: copy this pod's share of the catalogue from S3 into DIR.
#
# `cadenza package` has no shard flag, so each pod of the Indexed Job in
# deploy/k8s/package-job.yaml picks its own slice here: the catalogue (CATALOGUE_FILE, one
# object key per line, relative to CATALOGUE_SOURCE; blank lines and # comments skipped) is
# dealt round-robin, entry i to the pod whose JOB_COMPLETION_INDEX is i % SHARDS.  SHARDS
# must equal the Job's .spec.completions (tests/deploy checks that it does).
set -eu
dest=${1:?usage: fetch-shard.sh DIR}
: "${JOB_COMPLETION_INDEX:?set by Kubernetes for Indexed Jobs}"
: "${SHARDS:?the Job's completions}"
: "${CATALOGUE_SOURCE:?s3://bucket/prefix of the masters}"
catalogue=${CATALOGUE_FILE:-/etc/cadenza/catalogue/catalogue.txt}

mkdir -p "$dest"
i=0
mine=0
while IFS= read -r key || [ -n "$key" ]; do
    case $key in '' | '#'*) continue ;; esac
    if [ $((i % SHARDS)) -eq "$JOB_COMPLETION_INDEX" ]; then
        aws s3 cp --only-show-errors "${CATALOGUE_SOURCE%/}/$key" "$dest/$key"
        mine=$((mine + 1))
    fi
    i=$((i + 1))
done <"$catalogue"
echo "fetch-shard.sh: shard $JOB_COMPLETION_INDEX of $SHARDS: $mine of $i catalogue entries"
