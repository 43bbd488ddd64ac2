#!/usr/bin/env bash
# The offline demo: the whole headprobe pipeline on data and a model it makes itself.
#
#   bash scripts/demo.sh [RUN_DIR]        (default runs/demo)
#
# 1. trains a small GPT-Neo on synthetic children's stories (cached in RUN_DIR/model),
# 2. tags fresh stories with spaCy and aligns the tags to the model's tokens,
# 3. extracts per-head keys, queries and activity, also from a re-initialised copy,
# 4. fits the probe grid with its controls, runs the quotation and repeated-token studies,
# 5. regenerates the figures and prints the headline findings.
set -euo pipefail
cd "$(dirname "$0")/.."

run="${1:-runs/demo}"
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3; fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { printf '\n== %s\n' "$*"; }
start=$SECONDS

if [ ! -f "$run/model/config.json" ]; then
    step "training a small model on 4,000 synthetic stories (cached in $run/model)"
    "$py" -m extract train --corpus demo:4000:1 --run "$run" --tokenizer bpe:1024 \
        --layers 4 --heads 8 --d-model 64 --ctx 256 --batch 16 --steps "${DEMO_STEPS:-300}" \
        --quiet
else
    step "using the model trained earlier: $run/model"
fi

step "tagging 400 new stories with spaCy"
"$py" -m datasets_build --source demo:400:2 --tokenizer "$run/model" --run "$run" --overwrite

step "extracting keys, queries and activity (trained and re-initialised weights)"
"$py" -m extract --run "$run" --model "$run/model" --dtype float32 --overwrite --quiet
"$py" -m extract --run "$run" --model "$run/model" --dtype float32 --reinit-seed 0 \
    --out "$run/activations-random.h5" --overwrite --quiet

step "fitting the probe grid with controls"
"$py" -m probing fit --run "$run" --control-store "$run/activations-random.h5" --overwrite

step "case studies: quotation heads, repeated random tokens"
"$py" -m probing quote --run "$run" --model "$run/model" --overwrite > /dev/null
"$py" -m probing repeated --run "$run" --model "$run/model" --seq-len 30 --batch 20 \
    --overwrite > /dev/null

step "figures"
"$py" -m figures --run "$run" --format png,pdf

step "done in $((SECONDS - start)) s"
"$py" -m probing summary --run "$run"
echo
echo "outputs: $run/{dataset,activations.h5,probes,studies,figures}"
