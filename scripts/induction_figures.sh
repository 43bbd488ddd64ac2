#!/usr/bin/env bash
# The induction organism and the figures of docs/case-studies.md (docs/images/induction-*.png).
#
#   bash scripts/induction_figures.sh [RUN_DIR]        (default runs/induction)
#
# 1. trains the organism with `python -m extract train --recipe induction-local` (cached in
#    RUN_DIR/model; the recipe reads ../shared/data/tinystories/train-3118.txt, or
#    $HEADPROBE_SHARED/data/...),
# 2. runs the repeated-token study on it and on the shared TinyStories model,
# 3. draws the pattern, scatter and composition figures of both and copies the organism's
#    (and the shared model's scatter) to docs/images.
set -euo pipefail
cd "$(dirname "$0")/.."

run="${1:-runs/induction}"
shared="${HEADPROBE_SHARED:-../shared}"
. scripts/python.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { printf '\n== %s\n' "$*"; }

if [ ! -f "$run/model/config.json" ]; then
    step "training the induction organism (cached in $run/model)"
    "$py" -m extract train --recipe induction-local --run "$run" --threads 1 --quiet
fi
step "repeated random tokens: the organism"
"$py" -m probing repeated --run "$run" --model "$run/model" --overwrite | head -n 1
step "repeated random tokens: the shared TinyStories model"
"$py" -m probing repeated --model "$shared/models/tinystories-8L" --no-mlp-grid \
    --out "$run/shared-repeated" --overwrite | head -n 1

step "figures"
only=repeated_pattern,repeated_scatter,repeated_composition
"$py" -m figures --results "$run/studies/repeated" --out "$run/figures" --only "$only" \
    --format png --force
"$py" -m figures --results "$run/shared-repeated" --out "$run/shared-figures" \
    --only "$only" --format png --force
cp "$run/figures/repeated_pattern.png" docs/images/induction-patterns.png
cp "$run/figures/repeated_scatter.png" docs/images/induction-scatter.png
cp "$run/figures/repeated_composition.png" docs/images/induction-composition.png
cp "$run/shared-figures/repeated_scatter.png" docs/images/induction-scatter-shared.png
echo "wrote docs/images/induction-{patterns,scatter,composition,scatter-shared}.png"
