"""Command line of ``python -m extract train``: flags in, :func:`train_model` out.

``--recipe NAME`` (:mod:`extract.training.recipes`) sets the corpus, tokenizer and settings
of a documented organism as the flags' defaults; flags given explicitly still win.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import torch

from extract.training.checkpoint import checkpoint_path
from extract.training.config import ARCHES, FAMILIES, FILLERS, TrainConfig
from extract.training.data import read_corpus
from extract.training.loop import train_model
from extract.training.recipes import RECIPES, get_recipe, recipe_corpus
from headprobe.cli import add_device_arguments
from headprobe.errors import UsageError
from headprobe.locks import claim_output
from headprobe.rundir import resolve


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m extract train``."""
    d = TrainConfig()
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help="start from a documented organism's corpus, tokenizer and "
                             "settings (see docs/organisms.md); explicit flags override them; "
                             "default: none. "
                             + "; ".join(f"{r.name}: {r.help}" for r in RECIPES.values()))
    parser.add_argument("--corpus",
                        help="training texts: a .txt file (stories split at <|endoftext|>), "
                             "chat:PATH, chatgen:N, or any dataset SOURCE; default: the recipe's "
                             "corpus, required without one")
    parser.add_argument("--out", help="model directory to write (default RUN/model)")
    parser.add_argument("--run", help="run directory (runs/NAME; default: none, give --out "
                        "or --run)")
    parser.add_argument("--family", choices=FAMILIES, default=d.family,
                        help="gpt-neo (learned positions, LayerNorm, local layers; default), or "
                             "a rotary family: llama, qwen2 (RoPE, RMSNorm, global layers)")
    parser.add_argument("--arch", choices=ARCHES, default=d.arch,
                        help="gpt-neo (full blocks, any family), or attn-only (MLPs zeroed "
                             "and frozen)")
    parser.add_argument("--attn-only", dest="arch", action="store_const", const="attn-only",
                        help="the same as --arch attn-only")
    parser.add_argument("--kv-heads", type=int, default=d.kv_heads,
                        help="key/value heads of a rotary family (grouped-query attention); "
                             "default: one per query head")
    parser.add_argument("--layers", type=int, default=d.layers, help="transformer layers")
    parser.add_argument("--d-model", type=int, default=d.d_model, help="residual width")
    parser.add_argument("--heads", type=int, default=d.heads, help="attention heads per layer")
    parser.add_argument("--d-head", type=int, default=d.d_head,
                        help="width of each head in a rotary family (default 0: d_model // "
                             "heads)")
    parser.add_argument("--ctx", type=int, default=d.ctx, help="training window in tokens")
    parser.add_argument("--short-steps", type=int, default=d.short_steps,
                        help="train the last N steps on windows of ctx // 2 tokens, twice "
                             "as many per batch (see docs/organisms.md)")
    parser.add_argument("--window", type=int, default=d.window,
                        help="attention window of the local layers")
    parser.add_argument("--attention", default=d.attention,
                        help="kinds of layer from layer 0 on, 'global' or 'local' joined by "
                             "'-', the pattern repeated over the layers: global-local "
                             "alternates as in the shared model (the GPT-Neo default); "
                             "local-global-global makes only layer 0 of three local; the "
                             "rotary families have global layers only")
    parser.add_argument("--untied", dest="tied", action="store_false", default=d.tied,
                        help="an unembedding of its own instead of the embedding's transpose")
    parser.add_argument("--tokenizer", default="char",
                        help="a tokenizer directory, 'char', or 'bpe:VOCAB' (default char)")
    parser.add_argument("--sender-tokens", action="store_true",
                        help="chat corpora: one dedicated token per sender name")
    parser.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=d.batch, help="windows per step")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help="AdamW weight decay on matrices (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=d.warmup,
                        help="warm-up steps (default 5%% of --steps)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of the initial weights and of the batches")
    parser.add_argument("--seeds",
                        help="train one organism per seed, e.g. 0-4 or 0,2,7: each in its own "
                             "directory OUT-seedN (RUN/model-seedN), all with the same "
                             "tokenizer (default: one run of --seed into OUT)")
    parser.add_argument("--repeat-frac", type=float, default=d.repeat_frac,
                        help="share of training windows that get a segment of random tokens "
                             "written twice (default 0: none)")
    parser.add_argument("--repeat-min", type=int, default=d.repeat_min,
                        help="shortest repeated segment (tokens)")
    parser.add_argument("--repeat-max", type=int, default=d.repeat_max,
                        help="longest repeated segment (tokens)")
    parser.add_argument("--repeat-gap", type=int, default=d.repeat_gap,
                        help="most text tokens between the two copies")
    parser.add_argument("--repeat-count", type=int, default=d.repeat_count,
                        help="most repeated segments per window, each in the longest stretch "
                             "no segment covers yet (default 1)")
    parser.add_argument("--repeat-filler", choices=FILLERS, default=d.repeat_filler,
                        help="what surrounds the repeated segment: the corpus text (default) or "
                             "random: BOS and random tokens, so only the repeat is predictable")
    parser.add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                        help="checkpoint every N steps to OUT.checkpoint/")
    parser.add_argument("--stop-after", type=int,
                        help="stop after N steps, keeping the checkpoint for --resume "
                             "(default: run all --steps)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    add_device_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint of an interrupted run")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_train_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; with ``--recipe`` the recipe's settings are the defaults."""
    known, _ = parser.parse_known_args(argv)
    if known.recipe:
        recipe = get_recipe(known.recipe)
        parser.set_defaults(tokenizer=recipe.tokenizer_spec(), **recipe.settings)
    args = parser.parse_args(argv)
    if args.recipe and not args.corpus:
        args.corpus = recipe_corpus(get_recipe(args.recipe))
    if not args.corpus:
        raise UsageError("give --corpus SOURCE (or --recipe NAME)")
    return args


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of every setting the command line has a flag for."""
    names = [f.name for f in fields(TrainConfig) if hasattr(args, f.name)]
    return TrainConfig(**{name: getattr(args, name) for name in names})


def parse_seeds(spec: str) -> list[int]:
    """The seeds of ``--seeds``: ``A-B`` (inclusive) or a comma-separated list."""
    try:
        if "-" in spec.strip("-"):
            first, last = (int(x) for x in spec.split("-", 1))
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(x) for x in spec.split(",")]
    except ValueError:
        raise UsageError(f"--seeds takes A-B or a list like 0,2,7, got {spec!r}") from None
    if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds needs distinct seeds >= 0, got {spec!r}")
    return seeds


def run_train(args: argparse.Namespace) -> int:
    """Entry point of ``python -m extract train``: one run, or one per ``--seeds`` seed."""
    out = resolve(args.out, args.run, "model", "out")
    if args.stop_after is not None and args.stop_after < 1:
        raise UsageError("--stop-after must be at least 1 step")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError("--threads must be positive")
        torch.set_num_threads(args.threads)
    if not args.seeds:
        return train_one(args, claim_output(out))
    if args.seed != TrainConfig.seed:
        raise UsageError("--seeds trains one model per seed it names; leave out --seed")
    for seed in parse_seeds(args.seeds):
        args.seed = seed
        train_one(args, claim_output(out.with_name(f"{out.name}-seed{seed}")))
    return 0


def train_one(args: argparse.Namespace, out: Path) -> int:
    """Train the run of ``args`` (its ``seed``) into ``out``."""
    texts, senders = read_corpus(args.corpus)
    if args.sender_tokens and not senders:
        raise UsageError("--sender-tokens needs a chat corpus (chat:PATH or chatgen:N)")
    extra = senders if args.sender_tokens else []
    info = {"recipe": args.recipe, "corpus": args.corpus, "tokenizer": args.tokenizer,
            "sender_tokens": extra, "texts": len(texts)}
    result = train_model(texts, out, args.tokenizer, config_from_args(args), extra_tokens=extra,
                         resume=args.resume, overwrite=args.overwrite,
                         stop_after=args.stop_after, progress=not args.quiet, info=info,
                         device=args.device, model_dtype=args.model_dtype)
    if not result.finished:
        print(f"stopped; checkpoint in {checkpoint_path(out).parent} (continue with --resume)")
        return 0
    ev = "" if result.eval_loss is None else f", held-out loss {result.eval_loss:.3f}"
    print(f"wrote {out} (final training loss {result.final_loss:.3f}{ev})")
    return 0
