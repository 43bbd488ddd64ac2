"""Benchmark: extraction throughput against plain Hugging Face forward passes.

``python -m extract bench [--model DIR | --llama] [--stories 300] [--rss-check]`` tokenizes
the first N stories of the shared validation text with the model's tokenizer and measures,
side by side in one run:

  (a) one story per forward pass through a plain HF model, with ``register_forward_hook``
      on every layer's key and query projections and on the input of its output
      projection, results collected in Python lists (the straightforward way of collecting
      head activations);
  (b) the plain HF forward with no hooks, at its best batch size (stories sorted by length
      so that batches carry little padding);
  (c) this package's extractor writing a complete store with the default compression, timed
      over the whole ``extract_store`` call (model and dataset loading included), at its best
      ``--batch-tokens``;
  (d) the floor: the model's own forward over exactly the batches of (c), no hooks, no
      output kept, no unembedding (:mod:`extract.bench_floor`), at each ``--batch-tokens``.

Each round also breaks (c)'s wall time down into phases (forward, key/query projection,
copies and casts, compression and writing; the store's ``extract_phases``).

``--device`` and ``--model-dtype`` run all four on a GPU (``--device cuda``) or in another
compute dtype; GPU timings wait for the device to finish (``torch.cuda.synchronize``).

``--model DIR`` is any local causal LM (default: the shared GPT-Neo); ``--llama`` builds a
Llama-shaped model of TinyStories-8M size with random weights and the GPT-2 tokenizer
(:data:`LLAMA_BENCH`: 4 layers, d_model 256, 16 query heads and 4 key/value heads of 16,
rotary embeddings, gated MLP) in the temporary directory and times that.

The four are measured in ``--repeat`` interleaved rounds (the machine may be shared); each
round prints its own ratios, and the summary uses the median rate of each. The last round
also times other compression settings for the size/speed table.

``--rss-check`` also extracts 1000 and 3000 stories in fresh subprocesses and compares
their peak resident memory (the extractor streams, so the ratio should stay near 1).
``--plan-rss`` instead measures the memory of planning one shard on a dataset and on one
``--plan-scale`` times larger (:mod:`extract.bench_plan`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from datasets_build.sources import read_separated
from datasets_build.untagged import write_untagged_dataset
from extract.bench_floor import extract_batches, floor_forward, phase_lines, store_phases
from extract.store import DEFAULT_COMPRESSION, parse_compression
from headprobe.cli import Parser, add_device_arguments, split_list
from headprobe.devices import synchronize
from headprobe.errors import UsageError
from headprobe.memory import peak_rss_mb
from headprobe.tokenization import load_tokenizer

DEFAULT_TEXT = "../shared/data/tinystories/valid-3117.txt"
DEFAULT_BENCH_MODEL = "../shared/models/tinystories-8L"
DEFAULT_TOKENIZER = "../shared/tokenizers/gpt2"
# A Llama-shaped model the size of TinyStories-8M (GPT-2 vocabulary).
LLAMA_BENCH = dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=16,
                   num_key_value_heads=4, intermediate_size=1024, max_position_embeddings=2048,
                   vocab_size=50257, bos_token_id=50256, eos_token_id=50256)
# Module names of key/query projections (their outputs) and of output projections (their
# inputs, z) across families: Llama/Qwen/Mistral/Gemma, GPT-Neo, GPT-2, GPT-NeoX.
PROJECTIONS = (".k_proj", ".q_proj", ".attn.c_attn", ".attention.query_key_value")
OUT_PROJECTIONS = (".o_proj", ".out_proj", ".attn.c_proj", ".attention.dense")


def read_stories(path: str | Path, limit: int) -> list[str]:
    """The first ``limit`` non-empty stories of a ``<|endoftext|>``-separated file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"text file {path} does not exist")
    stories = []
    for text in read_separated(path):
        if text.strip():
            stories.append(text.strip())
        if len(stories) >= limit:
            break
    return stories


class Timing(NamedTuple):
    """Seconds of one measurement: wall clock and CPU time of this process (all threads)."""

    wall: float
    cpu: float


def _clock() -> Timing:
    return Timing(time.perf_counter(), time.process_time())


def _since(start: Timing) -> Timing:
    now = _clock()
    return Timing(now.wall - start.wall, now.cpu - start.cpu)


def _hf_model(model_dir: str, device: str = "cpu", model_dtype: str = "float32") -> Any:
    from extract.models import load_hf_model

    return load_hf_model(model_dir, device=device, dtype=model_dtype)


def _device(hf: Any) -> torch.device:
    return next(hf.parameters()).device


def build_llama_bench_model(out: Path, tokenizer: str = DEFAULT_TOKENIZER, seed: int = 0) -> Path:
    """Save a randomly initialised Llama of LLAMA_BENCH's shape, with ``tokenizer``, in ``out``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if not Path(tokenizer).is_dir():
        raise UsageError(f"tokenizer directory {tokenizer} does not exist")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_BENCH))
    with contextlib.redirect_stderr(io.StringIO()):   # transformers' progress bars
        model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    return out


def hooked_modules(hf: Any) -> tuple[list[Any], list[Any]]:
    """(key/query projections, output projections) of a HF model, by module name."""
    names = dict(hf.named_modules())
    projections = [m for n, m in names.items() if n.endswith(PROJECTIONS)]
    outs = [m for n, m in names.items() if n.endswith(OUT_PROJECTIONS)]
    if not projections or not outs:
        raise UsageError(f"cannot find the attention projections of model type "
                         f"{hf.config.model_type!r} for the hooked baseline")
    return projections, outs


def bench_hooked_hf(hf: Any, stories: Sequence[np.ndarray]) -> Timing:
    """(a) one story per forward, forward hooks on the key/query projections and on the
    output projection's input, collected in Python lists."""
    kept: list[torch.Tensor] = []
    zs: list[torch.Tensor] = []
    projections, outs = hooked_modules(hf)
    handles = [m.register_forward_hook(lambda m, i, o: kept.append(o)) for m in projections]
    handles += [m.register_forward_hook(lambda m, i, o: zs.append(i[0])) for m in outs]
    device = _device(hf)
    start = _clock()
    with torch.no_grad():
        for ids in stories:
            hf(torch.from_numpy(ids)[None].to(device))
    synchronize(str(device))
    seconds = _since(start)
    for handle in handles:
        handle.remove()
    return seconds


def bench_plain_hf(hf: Any, stories: Sequence[np.ndarray], batch: int) -> Timing:
    """(b) the plain HF forward, right-padded batches of ``batch`` stories (no hooks), stories
    sorted by length."""
    stories, device = sorted(stories, key=len), _device(hf)
    start = _clock()
    with torch.no_grad():
        for i in range(0, len(stories), batch):
            part = stories[i:i + batch]
            ids = np.zeros((len(part), max(len(s) for s in part)), dtype=np.int64)
            for row, story in enumerate(part):
                ids[row, :len(story)] = story
            hf(torch.from_numpy(ids).to(device))
    synchronize(str(device))
    return _since(start)


def bench_extractor(dataset: Path, model_dir: str, out: Path, **options: Any) -> Timing:
    """The whole ``extract_store`` call (loading the model and dataset included)."""
    from extract.extractor import extract_store

    start = _clock()
    extract_store(dataset, model_dir, out, overwrite=True, **options)
    return _since(start)


def bench_floor(hf: Any, batches: Sequence[np.ndarray]) -> Timing:
    """(d) the model's own forward over extract's batches (:func:`floor_forward`)."""
    start = _clock()
    floor_forward(hf, batches)
    return _since(start)


def _rss_child(args: argparse.Namespace, n_stories: int, workdir: Path) -> float:
    """Peak RSS (MiB) of a fresh process that extracts ``n_stories`` stories."""
    code = ("import sys, json; from extract.bench import _rss_run; "
            "print(json.dumps(_rss_run(*sys.argv[1:])))")
    result = subprocess.run(
        [sys.executable, "-c", code, args.text, args.model, str(n_stories), str(workdir),
         str(torch.get_num_threads()), args.device, args.model_dtype],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def _rss_run(text: str, model_dir: str, n_stories: str, workdir: str, threads: str,
             device: str = "cpu", model_dtype: str = "float32") -> dict[str, float]:
    torch.set_num_threads(int(threads))
    work = Path(workdir) / f"rss-{n_stories}"
    tok = load_tokenizer(model_dir)
    dataset = write_untagged_dataset(work / "dataset", read_stories(text, int(n_stories)), tok)
    bench_extractor(dataset, model_dir, work / "store.h5", device=device,
                    model_dtype=model_dtype)
    return {"peak_rss_mb": peak_rss_mb()}


def _bench_round(hf: Any, stories: Sequence[np.ndarray], dataset: Path, work: Path,
                 args: argparse.Namespace, sites: list[str],
                 batches: dict[int, list[np.ndarray]]) -> dict[str, Any]:
    """Timings of (a), (b) at each batch size, extract and (d) at each batch-tokens; the
    best of (b) and extract, (d) at extract's best batch-tokens, extract's phases there."""
    t_a = bench_hooked_hf(hf, stories)
    plain = {b: bench_plain_hf(hf, stories, b) for b in args.hf_batches}
    runs, floors = {}, {}
    for bt in args.batch_tokens:
        floors[bt] = bench_floor(hf, batches[bt])
        runs[bt] = bench_extractor(dataset, args.model, work / f"store-{bt}.h5",
                                   batch_tokens=bt, sites=sites, device=args.device,
                                   model_dtype=args.model_dtype)
    best_b = min(plain, key=lambda b: plain[b].wall)
    best_bt = min(runs, key=lambda bt: runs[bt].wall)
    loop, phases = store_phases(work / f"store-{best_bt}.h5")
    return {"a": t_a, "plain": plain, "runs": runs, "b": plain[best_b], "best_b": best_b,
            "c": runs[best_bt], "best_bt": best_bt, "floors": floors, "d": floors[best_bt],
            "loop": loop, "phases": phases}


def _rates(n_tokens: int, timing: Timing) -> str:
    return (f"{n_tokens / timing.wall:7.0f} tokens/s wall, "
            f"{n_tokens / timing.cpu:7.0f} per CPU-second")


def _ratios(res: dict[str, Any], field: str) -> str:
    """Speed-ups of extract over (a) and (b), and extract's time over the floor (d)'s."""
    a, b, c, d = (getattr(res[k], field) for k in ("a", "b", "c", "d"))
    return (f"extract / (a) = {a / c:.2f}x   extract / (b) = {b / c:.2f}x   "
            f"time of extract / (d) = {c / d:.2f}x")


def _print_round(index: int, res: dict[str, Any], n_tokens: int) -> None:
    print(f"round {index + 1}:")
    print(f"  (a) HF + forward hooks, one story per pass  : {_rates(n_tokens, res['a'])}")
    for b, timing in res["plain"].items():
        print(f"  (b) plain HF forward, batch {b:<3d}            : {_rates(n_tokens, timing)}")
    for bt, timing in res["runs"].items():
        print(f"  (c) extract, whole call, batch-tokens {bt:<5d}: {_rates(n_tokens, timing)}")
    for bt, timing in res["floors"].items():
        print(f"  (d) floor, blocks only, batch-tokens {bt:<5d}: {_rates(n_tokens, timing)}")
    print(f"  ratios, wall clock: {_ratios(res, 'wall')}   (b at batch {res['best_b']}, "
          f"extract and (d) at batch-tokens {res['best_bt']})")
    print(f"  ratios, CPU time  : {_ratios(res, 'cpu')}")
    whole = res["c"].wall
    print(f"  extract's wall time, {whole:.2f} s; its loop alone / (d) = "
          f"{res['loop'] / res['d'].wall:.2f}x:")
    print("\n".join(phase_lines(whole, res["loop"], res["phases"])))


def _print_medians(rounds: Sequence[dict[str, Any]], n_tokens: int) -> None:
    median = {key: Timing(*(float(np.median([getattr(r[key], f) for r in rounds]))
                            for f in Timing._fields)) for key in ("a", "b", "c", "d")}
    print(f"medians over {len(rounds)} rounds:")
    for key, label in (("a", "(a) HF + hooks"), ("b", "(b) plain HF  "),
                       ("c", "extract       "), ("d", "(d) floor     ")):
        print(f"  {label}: {_rates(n_tokens, median[key])}")
    print(f"  ratios, wall clock: {_ratios(median, 'wall')}")
    print(f"  ratios, CPU time  : {_ratios(median, 'cpu')}")


def _print_compression(last: dict[str, Any], dataset: Path, work: Path,
                       args: argparse.Namespace, sites: list[str], n_tokens: int) -> None:
    """Time and size of a store at each ``--compare`` setting, extract's best batch-tokens."""
    best_bt = last["best_bt"]
    print(f"compression settings (batch-tokens {best_bt}, last round):")
    for comp in args.compare:
        name = f"store-{best_bt}.h5" if comp == DEFAULT_COMPRESSION else f"store-{comp}.h5"
        timing = last["c"] if comp == DEFAULT_COMPRESSION else bench_extractor(
            dataset, args.model, work / name, batch_tokens=best_bt, sites=sites,
            compression=comp, device=args.device, model_dtype=args.model_dtype)
        size = (work / name).stat().st_size / 2**20
        print(f"  --compression {comp:<5s}: {_rates(n_tokens, timing)}, {size:6.1f} MiB, "
              f"extract / (a) = {last['a'].wall / timing.wall:.2f}x wall")


def run_bench(args: argparse.Namespace) -> int:
    if args.plan_rss:
        from extract.bench_plan import run_plan_rss

        with tempfile.TemporaryDirectory(prefix="headprobe-bench-") as tmp:
            return run_plan_rss(args, Path(tmp))
    texts = read_stories(args.text, args.stories)
    with tempfile.TemporaryDirectory(prefix="headprobe-bench-") as tmp:
        work = Path(tmp)
        if args.llama:
            args.model = str(build_llama_bench_model(work / "llama", args.tokenizer))
        tok = load_tokenizer(args.model)
        dataset = write_untagged_dataset(work / "dataset", texts, tok)
        from datasets_build.dataset import load_tagged_dataset

        stories = [ids for _, ids, _ in load_tagged_dataset(dataset).iter_stories()]
        n_tokens = sum(len(s) for s in stories)
        hf = _hf_model(args.model, args.device, args.model_dtype)
        cfg = hf.config
        heads = cfg.num_attention_heads
        shape = (f"{cfg.model_type}, {cfg.num_hidden_layers} layers, {heads} heads, "
                 f"{getattr(cfg, 'num_key_value_heads', None) or heads} key/value heads")
        print(f"{len(stories)} stories, {n_tokens} tokens, model {args.model} ({shape}), "
              f"device {args.device}, {args.model_dtype}, {torch.get_num_threads()} torch "
              "threads")
        bench_plain_hf(hf, stories[:20], 1)                      # warm-up
        sites = args.sites.split(",")
        batches = {bt: extract_batches(dataset, hf, bt, sites, work / "plan.h5")
                   for bt in args.batch_tokens}
        rounds = []
        for index in range(args.repeat):
            rounds.append(_bench_round(hf, stories, dataset, work, args, sites, batches))
            _print_round(index, rounds[-1], n_tokens)
        _print_medians(rounds, n_tokens)
        _print_compression(rounds[-1], dataset, work, args, sites, n_tokens)
        print(f"peak RSS of this process {peak_rss_mb():.0f} MiB")
        if args.rss_check:
            small, large = (_rss_child(args, n, work) for n in (1000, 3000))
            print(f"peak RSS extracting 1000 stories {small:.0f} MiB, 3000 stories "
                  f"{large:.0f} MiB: ratio {large / small:.2f}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stories", type=int, default=300, help="stories to time (default 300)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="<|endoftext|>-separated stories")
    parser.add_argument("--model", default=DEFAULT_BENCH_MODEL,
                        help="local HF causal LM directory (default: the shared GPT-Neo)")
    parser.add_argument("--llama", action="store_true",
                        help="build and time the Llama-shaped bench model (4 layers, d_model "
                             "256, 16 heads, 4 key/value heads; random weights) instead")
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                        help="tokenizer directory of the --llama model (default: GPT-2)")
    parser.add_argument("--sites", default="key,query,activity", help="sites to store")
    parser.add_argument("--batch-tokens", type=lambda s: [int(x) for x in s.split(",")],
                        default=[512, 1024, 2048], help="comma list to try")
    parser.add_argument("--hf-batches", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4], help="batch sizes to try for (b) (default 1,4)")
    parser.add_argument("--threads", type=int, help="torch CPU threads for every measurement "
                        "(default: torch's)")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--compare", type=split_list, default=["fast", "none", "1"],
                        help="compression settings for the size table (default fast,none,1)")
    parser.add_argument("--rss-check", action="store_true",
                        help="also compare peak RSS for 1000 vs 3000 stories")
    parser.add_argument("--plan-rss", action="store_true",
                        help="only measure the peak RSS of planning one shard on --stories "
                        "stories and on them --plan-scale times over (extract/bench_plan.py)")
    parser.add_argument("--plan-shards", type=int, default=50,
                        help="shards of the --plan-rss datasets; shard 0 is planned (default 50)")
    parser.add_argument("--plan-scale", type=int, default=10,
                        help="how many times larger the second --plan-rss dataset is "
                        "(default 10)")
    add_device_arguments(parser)


def build_parser() -> Parser:
    """The parser of ``python -m extract bench``."""
    parser = Parser(prog="python -m extract bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stories < 1:
        raise UsageError("--stories must be positive")
    if args.repeat < 1:
        raise UsageError("--repeat must be positive")
    for comp in args.compare:
        parse_compression(comp)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run_bench(args)
