#!/usr/bin/env bash
# The offline demo: the whole headprobe pipeline on two small models it trains itself.
#
#   bash scripts/demo.sh [RUN_DIR]        (default runs/demo)
#
# SEED (default 0) seeds both models' initial weights and batches; THREADS (default 1) is
# the thread count they train on. scripts/demo_seeds.sh runs the demo at several of each.
#
# 1. trains a story model, a small GPT-Neo on TinyStories text from the shared assets
#    (--recipe stories, cached in RUN_DIR/model), and an induction organism, a 2-layer
#    attention-only rotary model (--recipe induction, cached in RUN_DIR/induction); on one
#    thread the two train side by side, one per core,
# 2. tags 300 held-out stories with spaCy and aligns the tags to the story model's tokens,
# 3. extracts per-head keys, queries and activity, also from a re-initialised copy,
# 4. fits the probe grid with its controls, runs the quotation study on the story model and
#    the repeated-token study on the organism,
# 5. draws the figures and the attention viewer page, and prints the findings: each
#    with its control, or "not found".
set -euo pipefail
cd "$(dirname "$0")/.."

run="${1:-runs/demo}"
seed="${SEED:-0}"
threads="${THREADS:-1}"
. scripts/python.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$SECONDS
last=$SECONDS
step() {
    if [ "$last" != "$start" ] || [ "$SECONDS" != "$start" ]; then
        printf '   (%d s)\n' $((SECONDS - last))
    fi
    last=$SECONDS
    printf '\n== %s\n' "$*"
}

shared="${HEADPROBE_SHARED:-../shared}"
train() {   # train DIR RECIPE: one model of a recipe, unless DIR holds it already
    if [ ! -f "$1/config.json" ]; then
        "$py" -m extract train --recipe "$2" --out "$1" --seed "$seed" --threads "$threads" \
            --ckpt-every 500 --quiet
    fi
}
if [ -f "$run/model/config.json" ] && [ -f "$run/induction/config.json" ]; then
    step "using the models trained earlier: $run/model, $run/induction"
else
    step "training the story model and the induction organism (cached in $run)"
    # the heads that form depend on the seed and on the order of floating-point sums (the
    # thread count); docs/organisms.md counts in how many seeds each finding holds
    if [ "$threads" = 1 ]; then
        train "$run/induction" induction & organism=$!
        train "$run/model" stories
        wait "$organism"
    else
        train "$run/model" stories
        train "$run/induction" induction
    fi
fi

step "tagging 300 held-out stories with spaCy"
"$py" -m datasets_build --source "$shared/data/tinystories/valid-3117.txt" --limit 300 \
    --tokenizer "$run/model" --run "$run" --overwrite

step "extracting keys, queries and activity (trained and re-initialised weights)"
"$py" -m extract --run "$run" --model "$run/model" --dtype float32 --overwrite
"$py" -m extract --run "$run" --model "$run/model" --dtype float32 --reinit-seed 0 \
    --out "$run/activations-random.h5" --overwrite

step "fitting the probe grid with controls"
"$py" -m probing fit --run "$run" --control-store "$run/activations-random.h5" --overwrite

step "case studies: quotation heads (story model), repeated random tokens (organism)"
"$py" -m probing quote --run "$run" --model "$run/model" --overwrite > /dev/null
"$py" -m probing repeated --run "$run" --model "$run/induction" --no-mlp-grid \
    --overwrite > /dev/null

step "figures and the attention viewer"
"$py" -m figures --run "$run" --format png
story=$("$py" -c 'import sys, headprobe as hp
print(hp.read_study(sys.argv[1]).meta["example_story_id"])' "$run/studies/quote")
"$py" -m figures viewer --run "$run" --story "$story" --out "$run/figures/viewer.html"
"$py" -m figures atlas --run "$run"   # the head atlas: $run/figures/atlas.html

step "done in $((SECONDS - start)) s"
"$py" -m probing summary --run "$run"
echo
echo "outputs: $run/{dataset,activations.h5,probes,studies,figures}"
echo "attention viewer: $run/figures/viewer.html (story $story, the quote study's example)"
