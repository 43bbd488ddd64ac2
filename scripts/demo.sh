#!/usr/bin/env bash
# The offline demo: the whole headprobe pipeline on data and a model it makes itself.
#
#   bash scripts/demo.sh [RUN_DIR]        (default runs/demo)
#
# SEED (default 0) seeds the model's initial weights and batches; THREADS (default 1) is
# the thread count it trains on. scripts/demo_seeds.sh runs the demo at several of each.
#
# 1. trains a small GPT-Neo on synthetic children's stories, with repeated segments of
#    random tokens mixed into every training window (cached in RUN_DIR/model),
# 2. tags fresh stories with spaCy and aligns the tags to the model's tokens,
# 3. extracts per-head keys, queries and activity, also from a re-initialised copy,
# 4. fits the probe grid with its controls, runs the quotation and repeated-token studies,
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

if [ ! -f "$run/model/config.json" ]; then
    step "training a small model on 4,000 synthetic stories (cached in $run/model)"
    # 4 global layers of 4 heads, 64 wide; 3,000 steps on windows of 128 tokens, then 2,500
    # on windows of 64 (--short-steps). Each window holds a segment of random tokens written
    # twice (extract.training.repeats), which only an induction head predicts. The thread
    # count is pinned (THREADS, default one): the heads that form depend on the order of
    # floating-point sums (docs/organisms.md)
    "$py" -m extract train --corpus demo:4000:1 --run "$run" --tokenizer bpe:512 \
        --layers 4 --heads 4 --d-model 64 --attention global --ctx 128 --batch 16 --lr 5e-3 \
        --steps 5500 --short-steps 2500 --repeat-frac 1 --repeat-min 8 --repeat-max 28 \
        --repeat-gap 8 --ckpt-every 500 --seed "$seed" --threads "$threads"
else
    step "using the model trained earlier: $run/model"
fi

step "tagging 300 new stories with spaCy"
"$py" -m datasets_build --source demo:300:2 --tokenizer "$run/model" --run "$run" --overwrite

step "extracting keys, queries and activity (trained and re-initialised weights)"
"$py" -m extract --run "$run" --model "$run/model" --dtype float32 --overwrite
"$py" -m extract --run "$run" --model "$run/model" --dtype float32 --reinit-seed 0 \
    --out "$run/activations-random.h5" --overwrite

step "fitting the probe grid with controls"
"$py" -m probing fit --run "$run" --control-store "$run/activations-random.h5" --overwrite

step "case studies: quotation heads, repeated random tokens"
"$py" -m probing quote --run "$run" --model "$run/model" --overwrite > /dev/null
"$py" -m probing repeated --run "$run" --model "$run/model" --seq-len 24 --batch 20 \
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
