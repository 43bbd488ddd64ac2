#!/usr/bin/env bash
# The whole pipeline as dependent Slurm jobs (see docs/scale-out.md):
#   scripts/slurm/pipeline.sh RUN SOURCE MODEL TAG_SHARDS EXTRACT_SHARDS
# tagging array -> its merge -> extraction array -> its merge -> the probe grid. A merge
# waits for its whole array (afterany) and names any shard that failed; resubmit that task
# alone with the same arguments (sbatch --array=I ...), then the merge and what follows.
set -euo pipefail
run=$1 source=$2 model=$3 tag_shards=$4 extract_shards=$5
here=$(dirname "${BASH_SOURCE[0]}")
submit() { sbatch --parsable "$@"; }
tag=$(submit --array=0-$((tag_shards - 1)) "$here/tag-shard.sbatch" "$run" "$source" \
    "$model" "$tag_shards")
tag_merge=$(submit --dependency=afterany:"$tag" "$here/tag-merge.sbatch" "$run")
extract=$(submit --dependency=afterok:"$tag_merge" --array=0-$((extract_shards - 1)) \
    "$here/extract-shard.sbatch" "$run" "$model" "$extract_shards")
merge=$(submit --dependency=afterany:"$extract" "$here/merge.sbatch" "$run")
probe=$(submit --dependency=afterok:"$merge" "$here/probe.sbatch" "$run" --jobs 16)
echo "submitted: tagging $tag, its merge $tag_merge, extraction $extract, merge $merge, probing $probe"
