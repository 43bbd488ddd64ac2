"""Helpers the case studies share: command-line arguments, stories from a store, model runs.

Every study writes to ``--out DIR`` or ``--run runs/NAME`` (then ``runs/NAME/studies/<study>``)
and refuses to replace existing results without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headprobe.atomic import check_target
from headprobe.cli import add_device_arguments
from headprobe.errors import UsageError, opt
from headprobe.hooks import hook_name
from headprobe.locks import claim_output
from headprobe.progress import progress
from headprobe.rundir import model_of_store, require_input, run_path, study_path
from headprobe.stories import Story, row_blocks
from probing.study_io import Layout, write_study

QUOTE_CHARS = ('"', "\u201c", "\u201d", "''", "``")


# ---------------------------------------------------------------- arguments


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out DIR``, ``--run runs/NAME`` and ``--overwrite``."""
    parser.add_argument("--out", metavar="DIR",
                        help="results directory (default: RUN/studies/<study> with --run)")
    parser.add_argument("--run", metavar="DIR",
                        help="run directory: inputs default to its files, results go to "
                             "RUN/studies/<study> (default: none; give --out or --run)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results")


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True,
                        several: bool = False) -> None:
    """``--model`` (hub name or local HF directory; several: one or more of them),
    ``--device`` and ``--model-dtype``."""
    what = "model (hub name or local HF directory)"
    what += ("; default: the model named in the store, or RUN/model" if not required else
             "; default: RUN/model with --run")
    if several:
        what += ("; several models (the seeds of a recipe: RUN/model-seed*) each get their "
                 "own results directory under --out, then one k-of-n table")
    parser.add_argument("--model", metavar="M", default=None, required=False, help=what,
                        nargs="+" if several else None)
    add_device_arguments(parser)


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """``--store FILE.h5`` (default RUN/activations.h5)."""
    parser.add_argument("--store", metavar="FILE.h5",
                        help="activation store (default: RUN/activations.h5)")


def add_story_arguments(parser: argparse.ArgumentParser, split: str = "all",
                        max_stories: int = 300, top: bool = True) -> None:
    """The store and model, and which stories of the store a study reads: ``--split``,
    ``--max-stories`` (and ``--top``, the heads listed in the report)."""
    add_store_argument(parser)
    add_model_arguments(parser, required=False)
    parser.add_argument("--split", default=split, choices=["all", "train", "test"],
                        help=f"stories of this split (default {split})")
    parser.add_argument("--max-stories", type=int, default=max_stories,
                        help=f"stories run through the model (default {max_stories})")
    if top:
        parser.add_argument("--top", type=int, default=10,
                            help="heads listed in the report (default 10)")


# the least value of each count a study's command line may take
LEAST = {"max_stories": 1, "top": 1, "random_draws": 1, "seed": 0}


def check_counts(args: argparse.Namespace) -> None:
    """UsageError for a count among LEAST that the study's arguments set below its least
    value (``--max-stories 0`` would run no story, ``--top 0`` list no head)."""
    for name, least in LEAST.items():
        value = getattr(args, name, None)
        if value is not None and value < least:
            raise UsageError(f"{opt(name)} must be at least {least}, got {value}")


def output_dir(args: argparse.Namespace, study: str) -> Path:
    """Where ``study`` writes: ``--out`` or ``RUN/studies/<study>``, owned by this command
    (:func:`headprobe.locks.claim_output`); refused if it exists, or if a count among its
    arguments is out of range (:func:`check_counts`)."""
    check_counts(args)
    if getattr(args, "out", None):
        out = Path(args.out)
    elif getattr(args, "run", None):
        out = study_path(args.run, study)
    else:
        raise UsageError("give --out DIR or --run runs/NAME")
    claim_output(out)
    return check_target(out, getattr(args, "overwrite", False), "directory")


def finish_study(out: Path, layout: Layout, arrays: dict[str, Any], meta: dict[str, Any],
                 report: str, overwrite: bool) -> int:
    """Write a study's results directory, print its report and where it went; exit code 0."""
    write_study(out, layout, arrays, meta, report, overwrite=overwrite)
    print(report)
    print(f"wrote {out}")
    return 0


def store_path(args: argparse.Namespace) -> Path:
    """The activation store named by ``--store`` or ``--run``; it must exist."""
    if getattr(args, "store", None):
        path = Path(args.store)
    elif getattr(args, "run", None):
        path = run_path(args.run, "store")
    else:
        raise UsageError("give --store FILE.h5 or --run runs/NAME")
    return require_input("store", path, getattr(args, "run", None))


@contextmanager
def store_study(args: argparse.Namespace, study: str) -> Iterator[tuple[Path, Any]]:
    """(results directory, open activation store) of a study that reads a store."""
    from extract.store import open_store

    out = output_dir(args, study)
    with open_store(store_path(args)) as store:
        yield out, store


def model_name(args: argparse.Namespace, store_attrs: dict[str, Any] | None = None,
               required: bool = True) -> str | None:
    """``--model``, else the store's model, else ``RUN/model``; None when optional and unknown."""
    if getattr(args, "model", None):
        return str(args.model)
    name = model_of_store(store_attrs or {}, getattr(args, "run", None))
    if name is None and required:
        raise UsageError("give --model M (the store does not name its model)")
    return name


def required_model(args: argparse.Namespace) -> tuple[str, Any]:
    """(name, booted model) of ``--model`` (else RUN/model), which the study cannot do
    without."""
    name = getattr(args, "model", None) or model_of_store({}, getattr(args, "run", None))
    if not name:
        raise UsageError("give --model M")
    return str(name), load_study_model(name, args.device, args.model_dtype)


def load_study_model(name: str, device: str | None = None, dtype: str = "float32") -> Any:
    """Boot ``name`` through TransformerLens on ``device`` (None: cuda when available),
    computing in ``dtype`` (see :func:`extract.models.load_model`)."""
    from extract.models import load_model

    return load_model(name, device=device, dtype=dtype)


# ---------------------------------------------------------------- tokens


def is_quote_mark(text: str) -> bool:
    """True for a token that holds a quotation mark."""
    return any(q in text for q in QUOTE_CHARS)


# ---------------------------------------------------------------- model runs


def batches(items: Sequence[Any], max_tokens: int = 8192, power: int = 1,
            size: Callable[[Any], int] | None = None) -> Iterator[list[Any]]:
    """Consecutive groups of stories with ``len(group) * longest ** power <= max_tokens``.

    ``power=2`` bounds the size of attention patterns instead of token counts. size: the
    length of an item (default its ``input_ids``' length).
    """
    group: list[Any] = []
    longest = 0
    for item in items:
        n = len(item.input_ids) if size is None else size(item)
        if group and max(longest, n) ** power * (len(group) + 1) > max_tokens:
            yield group
            group, longest = [], 0
        group.append(item)
        longest = max(longest, n)
    if group:
        yield group


# about the most bytes one large tensor of a forward pass (logits, one layer's attention
# pattern) may take: a study's passes are cut to fit it, so its peak memory stays bounded
FORWARD_BYTES = 2**25


def logit_rows(model: Any, width: int, max_bytes: int = FORWARD_BYTES) -> int:
    """How many sequences of ``width`` tokens one pass may take so that the float32 logits
    [rows, width, d_vocab] stay within about ``max_bytes`` (at least one)."""
    return max(1, max_bytes // (4 * width * int(model.cfg.d_vocab)))


def model_batches(model: Any, stories: Sequence[Story], max_tokens: int = 8192,
                  max_bytes: int = FORWARD_BYTES) -> Iterator[list[Story]]:
    """Consecutive groups of stories for one forward pass, so that its memory stays bounded
    however long the stories: at most ``max_tokens`` tokens, and fewer when the logits
    [tokens, d_vocab] would exceed about ``max_bytes`` (they and their log-softmax are a
    loss's largest tensors); one layer's attention pattern [batch, n_heads, longest,
    longest] of at most about ``max_bytes`` (a longer story is a group of its own)."""
    per_cell = 4 * model.cfg.n_heads
    max_tokens = min(max_tokens, logit_rows(model, 1, max_bytes))
    with progress(len(stories), "forward passes") as bar:
        for group in batches(stories, max_tokens):
            for part in batches(group, max(1, max_bytes // per_cell), power=2):
                yield part
                bar.update(len(part))


def padded(ids: Sequence[np.ndarray], device: str = "cpu") -> torch.Tensor:
    """Right-pad token id arrays with 0 into [batch, max_len]; causal attention ignores pads."""
    width = max(len(a) for a in ids)
    out = torch.zeros(len(ids), width, dtype=torch.long)
    for i, a in enumerate(ids):
        out[i, :len(a)] = torch.as_tensor(a, dtype=torch.long)
    return out.to(device)


def check_context(model: Any, stories: Sequence[Story]) -> None:
    """Refuse stories longer than the model's context."""
    longest = max((len(s.input_ids) for s in stories), default=0)
    if longest > int(model.cfg.n_ctx):
        raise UsageError(f"a story has {longest} tokens, more than the model's context of "
                         f"{model.cfg.n_ctx}")


HookFn = Callable[[torch.Tensor, Any], torch.Tensor | None]


def run_hooked(model: Any, tokens: torch.Tensor,
               hooks: Sequence[tuple[str, HookFn]] = ()) -> torch.Tensor:
    """Logits [batch, pos, d_vocab] of a no-grad forward pass with forward hooks (the
    tokens go to the model's device)."""
    with torch.inference_mode():
        return model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=list(hooks),
                                    **no_kept_attentions(model))


def no_kept_attentions(model: Any) -> dict[str, Any]:
    """Forward arguments that stop a TransformerBridge's Hugging Face model from returning
    the attention weights of every layer (the bridge asks for them by default).

    Those weights, [batch, n_heads, pos, pos] per layer, would stay alive until the forward
    pass ends: for a long story several times the memory of everything else. The
    ``hook_pattern`` hooks still fire, since the attention modules return their weights
    either way.
    """
    adapter = getattr(model, "adapter", None)
    if getattr(adapter, "supports_hf_output_attentions", False):
        return {"output_attentions": False}
    return {}


def capture(model: Any, tokens: torch.Tensor, names: Sequence[str],
            extra_hooks: Sequence[tuple[str, HookFn]] = ()) -> tuple[torch.Tensor,
                                                                     dict[str, torch.Tensor]]:
    """Run ``tokens`` and keep the activations of hooks ``names``: (logits, {name: act}).

    Activations are keyed by the names asked for: an alias such as ``hook_resid_pre`` is
    reported by the bridge under its own name (``hook_in``).
    """
    acts: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook: Any, name: str) -> None:
        acts[name] = act.detach().clone()

    logits = run_hooked(model, tokens,
                        [*extra_hooks, *((n, functools.partial(keep, name=n)) for n in names)])
    return logits, acts


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Loss (nats) of predicting each next token: [batch, pos - 1]."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logprobs.gather(-1, tokens[:, 1:, None])[..., 0]


PatternVisit = Callable[[int, int, torch.Tensor], None]


def visit_patterns(model: Any, stories: Sequence[Story], visit: PatternVisit,
                   layers: Sequence[int] | None = None, max_bytes: int = FORWARD_BYTES,
                   device: str = "cpu") -> None:
    """Hand the attention pattern of every story and layer to ``visit(i, layer, pattern)``.

    i indexes ``stories``; pattern [n_heads, n_tok, n_tok] (destination x source) is one
    layer's ``hook_pattern`` of ``stories[i]``, valid only during the call (copy what must
    outlive it). ``visit`` runs inside the hook, so no pattern is kept past its layer and
    memory stays that of one forward pass however long a story or many the stories.
    Stories are run in batches whose patterns over all layers take at most about
    ``max_bytes`` (one story longer than that is a batch of its own). layers: the layers
    visited (default all).
    """
    check_context(model, stories)
    wanted = range(model.cfg.n_layers) if layers is None else layers
    names = [hook_name("pattern", layer) for layer in wanted]
    per_cell = 4 * model.cfg.n_layers * model.cfg.n_heads
    order = list(range(len(stories)))
    with progress(len(stories), "attention patterns") as bar:
        for group in batches(order, max(1, max_bytes // per_cell), power=2,
                             size=lambda i: len(stories[i].input_ids)):
            _visit_group(model, stories, group, names, visit, device)
            bar.update(len(group))


def _visit_group(model: Any, stories: Sequence[Story], group: list[int], names: list[str],
                 visit: PatternVisit, device: str) -> None:
    """:func:`visit_patterns` for the stories ``group`` (indices), run as one batch."""
    fired: set[int] = set()

    def hook(pattern: torch.Tensor, hook: Any) -> None:
        fired.add(hook.layer())
        for row, i in enumerate(group):
            n = len(stories[i].input_ids)
            visit(i, hook.layer(), pattern[row, :, :n, :n].float().cpu())

    tokens = padded([stories[i].input_ids for i in group], device)
    run_hooked(model, tokens, [(name, hook) for name in names])
    if len(fired) < len(names):
        raise RuntimeError("the model ran without handing its attention patterns to "
                           "the hook_pattern hooks")


def head_pattern(model: Any, story: Story, head: tuple[int, int]) -> np.ndarray:
    """Attention pattern [n_tok, n_tok] (destination x source) of ``head`` (layer, head) on
    one story."""
    out: list[np.ndarray] = []

    def keep(i: int, layer: int, pattern: torch.Tensor) -> None:
        out.append(pattern[head[1]].numpy().copy())

    visit_patterns(model, [story], keep, layers=[head[0]])
    return out[0]


def activity_sums(store: Any, stories: Sequence[Story], masks: Sequence[np.ndarray],
                  max_rows: int = 2**16) -> list[np.ndarray]:
    """Per story and head, the sum of the ``activity`` site over the rows each mask picks.

    masks: each [n_tokens] bool over the store's rows; returns one [n_stories, n_layers,
    n_heads] array per mask. The store is read in blocks of whole stories of at most about
    ``max_rows`` rows (:func:`headprobe.stories.row_blocks`), never a whole layer at once.
    """
    n_l, n_h = store.n_layers, store.n_heads
    sums = [np.zeros((len(stories), n_l, n_h)) for _ in masks]
    for lo, hi, members in row_blocks(stories, max_rows):
        owner = np.full(hi - lo, -1)
        for i in members:
            owner[stories[i].start - lo:stories[i].stop - lo] = i
        picks = [np.asarray(mask[lo:hi], dtype=bool) & (owner >= 0) for mask in masks]
        for layer in range(n_l):
            act = store.read_layer("activity", layer, index=np.arange(lo, hi))    # [rows, H]
            for total, pick in zip(sums, picks, strict=True):
                np.add.at(total[:, layer], owner[pick], act[pick])
    return sums


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns (floats with 4 significant decimals)."""
    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return f"{v:.4g}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def example_window(marked: np.ndarray, width: int = 40, before: int = 6) -> range:
    """Positions of an example shown in a report: ``width`` tokens from a little before the
    first marked position (marked [n_tok] bool)."""
    hits = np.flatnonzero(marked)
    start = max(0, int(hits[0]) - before) if len(hits) else 0
    return range(start, min(len(marked), start + width))


def top_heads(score: np.ndarray, k: int, largest: bool = True) -> list[tuple[int, int]]:
    """The ``k`` best (layer, head) of a [n_layers, n_heads] score grid (NaNs last)."""
    flat = np.where(np.isnan(score), -np.inf if largest else np.inf, score).ravel()
    order = np.argsort(-flat if largest else flat, kind="stable")[:k]
    return [tuple(int(x) for x in np.unravel_index(i, score.shape)) for i in order]
