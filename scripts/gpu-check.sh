#!/usr/bin/env bash
# GPU checks on one CUDA device (about 5-8 minutes): the tests marked gpu, then
# `extract bench` on cuda — the shared GPT-Neo in float32 and bfloat16, the Llama-shaped
# bench model in bfloat16 — printing the same ratios as on the CPU.
#   bash scripts/gpu-check.sh            (PYTHON=.venv/bin/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python}
shared=${HEADPROBE_SHARED:-$(cd .. && pwd)/shared}
export HEADPROBE_SHARED=$shared
"$py" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
"$py" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
echo "== pytest -m gpu"
"$py" -m pytest -q -p no:cacheprovider -m gpu
bench=(-m extract bench --device cuda --stories 300 --repeat 2 --compare fast
       --batch-tokens 1024,4096,16384 --hf-batches 1,16 --text "$shared/data/tinystories/valid-3117.txt")
for dtype in float32 bfloat16; do
    echo "== extract bench, shared GPT-Neo, cuda, $dtype"
    "$py" "${bench[@]}" --model "$shared/models/tinystories-8L" --model-dtype "$dtype"
done
echo "== extract bench, Llama-shaped model, cuda, bfloat16"
"$py" "${bench[@]}" --llama --tokenizer "$shared/tokenizers/gpt2" --model-dtype bfloat16
