#!/usr/bin/env bash
# The demo at several training seeds and thread counts, each in its own run directory, then
# in how many of those runs each finding holds (python -m probing summary over them all).
#
#   bash scripts/demo_seeds.sh [--dry-run] [OUT_DIR]      (default runs/demo-seeds)
#
# SEEDS (default "0 1 2 3 4") and THREADS (default "1 2") choose the runs: one per (seed,
# thread count), OUT_DIR/seedS-threadsT, made by scripts/demo.sh with SEED=S THREADS=T, its
# output in OUT_DIR/seedS-threadsT.log. A run whose model exists keeps it (scripts/demo.sh
# caches it). --dry-run prints the commands instead of running them. Each demo takes about
# nine minutes on two idle cores; ten of them run one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=""
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out="${1:-runs/demo-seeds}"
seeds="${SEEDS:-0 1 2 3 4}"
thread_counts="${THREADS:-1 2}"
. scripts/python.sh

runs=()
for threads in $thread_counts; do
    for seed in $seeds; do
        run="$out/seed$seed-threads$threads"
        runs+=("$run")
        if [ -n "$dry" ]; then
            echo "SEED=$seed THREADS=$threads bash scripts/demo.sh $run > $run.log"
            continue
        fi
        mkdir -p "$out"
        echo "== seed $seed, $threads thread(s): $run (log: $run.log)"
        start=$SECONDS
        SEED="$seed" THREADS="$threads" PYTHON="$py" bash scripts/demo.sh "$run" > "$run.log" 2>&1
        echo "   done in $((SECONDS - start)) s"
    done
done

if [ -n "$dry" ]; then
    echo "$py -m probing summary --run ${runs[*]}"
    exit 0
fi
echo
"$py" -m probing summary --run "${runs[@]}" | tee "$out/k-of-n.txt"
