#!/usr/bin/env bash
# Sourced by the array scripts: reads the options every array script takes before its own,
#   SHARDS [--array-first F] [--array-step S]
# and sets `shards` (how many shards in all, fixed whatever part of the array runs) and
# `index` (this task's shard: (SLURM_ARRAY_TASK_ID - F) / S, F and S the first index and
# the step of the array as first submitted; defaults 0 and 1). The rest of the arguments
# stay in `rest`. Resubmitting one task alone (sbatch --array=17 ...) with the same
# arguments therefore runs the same shard.
shards=${1:?give the number of shards}
shift
first=0 step=1
while (( $# )); do
    case $1 in
        --array-first) first=$2; shift 2 ;;
        --array-step) step=$2; shift 2 ;;
        *) break ;;
    esac
done
rest=("$@")
task=${SLURM_ARRAY_TASK_ID:?run this as a task of a Slurm job array (sbatch --array=...)}
if ! [[ $shards =~ ^[1-9][0-9]*$ && $first =~ ^[0-9]+$ && $step =~ ^[1-9][0-9]*$ ]] \
    || (( (task - first) % step != 0 )); then
    echo "error: array task $task does not fit SHARDS $shards, --array-first $first, --array-step $step" >&2
    exit 2
fi
index=$(( (task - first) / step ))
if (( index < 0 || index >= shards )); then
    echo "error: array task $task is shard $index, outside 0..$((shards - 1)) (--array-first $first, --array-step $step)" >&2
    exit 2
fi
