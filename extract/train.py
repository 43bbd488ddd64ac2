"""Train small causal language models ("model organisms") and save them in HF format.

The trained model is a GPT-Neo like the shared TinyStories model: alternating
global/local attention, tied embeddings, no dropout, every story prefixed with the
BOS token. It is saved as a Hugging Face directory (``config.json``,
``model.safetensors``, tokenizer files, ``training.json``) that
:func:`extract.models.load_model` boots like any other model.

``attn-only`` keeps the same HF architecture so every loader understands it, but the
MLP output projections are zeroed and frozen (with the rest of the MLP and its layer
norm), so each block adds only its attention output to the residual stream.

Training is a plain PyTorch loop: AdamW, linear warm-up then cosine decay to 10% of
the peak rate, gradient clipping at 1.0, random windows of ``ctx`` tokens cut from
the BOS-joined token stream. It is deterministic for a seed on the CPU and checkpoints
every ``ckpt_every`` steps to ``OUT.checkpoint/`` so an interrupted run can resume
and end with exactly the weights of an uninterrupted one. The final directory is
written atomically; the checkpoint is removed once it is in place.

Python use::

    # texts + a tokenizer spec ("char", "bpe:512", or a tokenizer directory)
    train_model(texts, "runs/chat/model", tokenizer="char", layers=2, steps=2000)

    # a callable that samples token-id batches: BOS + random tokens repeated twice
    def sample(gen, batch):
        half = torch.randint(1, 100, (batch, 10), generator=gen)
        bos = torch.zeros(batch, 1, dtype=torch.long)
        return torch.cat([bos, half, half], dim=1)          # [batch, 21]

    train_model(sample, "runs/induction/model", vocab_size=100, ctx=21, layers=2,
                heads=4, d_model=64, arch="attn-only", steps=600, lr=3e-3)
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headprobe.atomic import atomic_dir, atomic_file, check_target
from headprobe.errors import UsageError
from headprobe.manifest import base_manifest, write_json
from headprobe.tokenization.spec import tokenizer_from_spec

ARCHES = ("gpt-neo", "attn-only")
CHECKPOINT_SUFFIX = ".checkpoint"


@dataclass
class TrainConfig:
    """Architecture and optimisation settings (all saved in training.json)."""

    arch: str = "gpt-neo"
    layers: int = 8
    d_model: int = 64
    heads: int = 16
    ctx: int = 256          # training window = max positions of the model
    window: int = 256       # local attention window of the "local" layers
    vocab_size: int = 0     # 0: taken from the tokenizer
    steps: int = 2000
    batch: int = 32
    lr: float = 3e-3
    warmup: int = -1        # -1: 5% of the steps
    weight_decay: float = 0.1
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 200
    eval_fraction: float = 0.05

    def check(self) -> None:
        if self.arch not in ARCHES:
            raise UsageError(f"unknown --arch {self.arch!r}; choose from {', '.join(ARCHES)}")
        for name in ("layers", "d_model", "heads", "ctx", "steps", "batch", "log_every",
                     "ckpt_every", "window"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise UsageError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if self.lr <= 0:
            raise UsageError(f"learning rate must be positive, got {self.lr}")


@dataclass
class TrainResult:
    out_dir: Path
    log: list[list[float]]     # [step, loss, seconds] rows
    final_loss: float
    eval_loss: float | None
    finished: bool = True      # False: stopped early, checkpoint kept for resume


# ---------------------------------------------------------------- model


def gpt_neo_config(cfg: TrainConfig, vocab_size: int, bos: int = 0) -> Any:
    """The GPT-Neo config for ``cfg``: alternating global/local layers, tied embeddings."""
    from transformers import GPTNeoConfig

    pairs, odd = divmod(cfg.layers, 2)
    attention_types: list[Any] = []
    if pairs:
        attention_types.append([["global", "local"], pairs])
    if odd:
        attention_types.append([["global"], 1])
    config = GPTNeoConfig(
        vocab_size=vocab_size, max_position_embeddings=cfg.ctx, hidden_size=cfg.d_model,
        num_layers=cfg.layers, num_heads=cfg.heads, attention_types=attention_types,
        intermediate_size=4 * cfg.d_model, window_size=cfg.window,
        activation_function="gelu_new", embed_dropout=0.0, attention_dropout=0.0,
        resid_dropout=0.0, bos_token_id=bos, eos_token_id=bos, tie_word_embeddings=True,
    )
    config.headprobe_arch = cfg.arch
    return config


def make_attn_only(model: Any) -> None:
    """Zero the MLP output projections and freeze the MLPs and their layer norms."""
    with torch.no_grad():
        for block in model.transformer.h:
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
            for p in [*block.mlp.parameters(), *block.ln_2.parameters()]:
                p.requires_grad_(False)


def build_model(cfg: TrainConfig, vocab_size: int, bos: int = 0) -> Any:
    """A freshly initialised GPT-Neo (seeded by ``cfg.seed``)."""
    from transformers import GPTNeoForCausalLM

    torch.manual_seed(cfg.seed)
    model = GPTNeoForCausalLM(gpt_neo_config(cfg, vocab_size, bos))
    if cfg.arch == "attn-only":
        make_attn_only(model)
    return model


def make_optimizer(model: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (embeddings and linear weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=False)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr / 10``."""
    warmup = cfg.warmup if cfg.warmup >= 0 else max(1, cfg.steps // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


# ---------------------------------------------------------------- data


BatchFn = Callable[[torch.Generator, int], Any]


def encode_stream(texts: Sequence[str], tok: Any) -> np.ndarray:
    """BOS + tokens of each text, concatenated: token ids [n_tokens]."""
    from headprobe.tokenization import bos_id

    bos = bos_id(tok)
    if bos is None:
        raise UsageError("the tokenizer has neither a BOS nor an EOS token to start stories with")
    parts = []
    for text in texts:
        parts.append([bos])
        parts.append(tok(text, add_special_tokens=False)["input_ids"])
    return np.fromiter((i for p in parts for i in p), dtype=np.int64)


def stream_sampler(stream: np.ndarray, ctx: int) -> BatchFn:
    """Random windows of ctx + 1 tokens from ``stream``: a ``sample(gen, batch)``."""
    data = torch.from_numpy(stream)
    if len(data) < ctx + 2:
        raise UsageError(f"the corpus has {len(data)} tokens, fewer than one window of "
                         f"{ctx + 1}; lower --ctx or give more text")

    def sample(gen: torch.Generator, batch: int) -> torch.Tensor:
        starts = torch.randint(0, len(data) - ctx, (batch,), generator=gen)
        return torch.stack([data[s:s + ctx + 1] for s in starts.tolist()])

    return sample


def _split_batch(value: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A sampler returns ids [batch, seq] or (ids, loss_mask [batch, seq - 1])."""
    if isinstance(value, tuple):
        ids, mask = value
        return torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask, dtype=torch.bool)
    return torch.as_tensor(value, dtype=torch.long), None


def batch_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean next-token cross-entropy of ``ids`` [batch, seq] (over ``mask`` if given)."""
    logits = model(input_ids=ids[:, :-1]).logits
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    if mask is None:
        return losses.mean()
    mask = mask.reshape(-1)
    return losses[mask].mean()


@torch.no_grad()
def stream_loss(model: Any, stream: np.ndarray, ctx: int, batch: int = 16) -> float:
    """Mean next-token loss over consecutive windows of ``stream`` [n_tokens]."""
    n = (len(stream) - 1) // ctx
    if n == 0:
        return float("nan")
    x = torch.from_numpy(stream[:n * ctx + 1])
    windows = torch.stack([x[i * ctx:(i + 1) * ctx + 1] for i in range(n)])
    total = 0.0
    for i in range(0, n, batch):
        chunk = windows[i:i + batch]
        total += float(batch_loss(model, chunk, None)) * len(chunk)
    return total / n


# ---------------------------------------------------------------- checkpoints


def checkpoint_path(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + CHECKPOINT_SUFFIX) / "checkpoint.pt"


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def _fingerprint(stream: np.ndarray | None) -> str:
    return "" if stream is None else hashlib.sha256(stream.tobytes()).hexdigest()[:16]


_RESUME_KEYS = ("arch", "layers", "d_model", "heads", "ctx", "window", "vocab_size", "steps",
                "batch", "lr", "warmup", "weight_decay", "seed")


def _check_resume(saved: dict[str, Any], cfg: TrainConfig, fingerprint: str,
                  saved_fp: str) -> None:
    differ = [k for k in _RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if differ:
        k = differ[0]
        raise UsageError(f"cannot resume: the checkpoint was trained with {k}={saved.get(k)!r}, "
                         f"this run asks for {getattr(cfg, k)!r}")
    if saved_fp != fingerprint:
        raise UsageError("cannot resume: the checkpoint was trained on a different corpus")


# ---------------------------------------------------------------- training


def train_model(data: Sequence[str] | Sequence[Sequence[int]] | BatchFn, out_dir: str | Path,
                tokenizer: Any = None, config: TrainConfig | None = None, *,
                extra_tokens: Sequence[str] = (), eval_texts: Sequence[str] | None = None,
                resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
                progress: bool = True, info: dict[str, Any] | None = None,
                **overrides: Any) -> TrainResult:
    """Train a causal LM on ``data`` and save it as a HF directory ``out_dir``.

    data: texts (with ``tokenizer``: object, directory, "char" or "bpe:VOCAB"), token-id
    sequences (each already starting with BOS), or ``sample(gen, batch)`` returning ids
    [batch, seq <= ctx + 1] or (ids, loss_mask [batch, seq - 1]). ``config`` fields can be
    given as keyword arguments (``steps=300, layers=2``). ``stop_after`` ends the run
    after that many steps with a checkpoint but no model (continue with ``resume``).
    """
    cfg = config or TrainConfig()
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown training settings: {', '.join(sorted(unknown))}")
    cfg = TrainConfig(**{**asdict(cfg), **overrides})
    cfg.check()
    out_dir = Path(out_dir)
    ckpt = checkpoint_path(out_dir)
    check_target(out_dir, overwrite)
    if not resume:
        if ckpt.exists() and not overwrite:
            raise UsageError(f"{ckpt.parent} holds an interrupted run; pass --resume to "
                             "continue it or --overwrite to start over")
    elif not ckpt.exists():
        raise UsageError(f"nothing to resume: no checkpoint at {ckpt}")

    sample, stream, eval_stream, tok = _prepare_data(data, tokenizer, cfg, extra_tokens,
                                                     eval_texts)
    if cfg.vocab_size <= 0:
        raise UsageError("vocab_size is needed when training without a tokenizer")
    from headprobe.tokenization import bos_id

    bos = bos_id(tok) if tok is not None else 0
    model = build_model(cfg, cfg.vocab_size, bos or 0)
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    start, log, elapsed = 0, [], 0.0
    fp = _fingerprint(stream)
    if resume:
        state = torch.load(ckpt, weights_only=False)
        _check_resume(state["config"], cfg, fp, state["fingerprint"])
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        gen.set_state(state["rng"])
        start, log, elapsed = state["step"], state["log"], state["elapsed"]

    def save_state(step: int) -> None:
        _save_checkpoint(ckpt, {"model": model.state_dict(), "optim": opt.state_dict(),
                                "rng": gen.get_state(), "step": step, "log": log,
                                "elapsed": elapsed + time.perf_counter() - t0,
                                "config": asdict(cfg), "fingerprint": fp})

    from tqdm.auto import tqdm

    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc="train",
               dynamic_ncols=True)
    model.train()
    t0 = time.perf_counter()
    loss_value = float("nan")
    try:
        for step in range(start, end):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            ids, mask = _split_batch(sample(gen, cfg.batch))
            if ids.shape[1] > cfg.ctx + 1:
                raise UsageError(f"the sampler gave sequences of {ids.shape[1]} tokens; "
                                 f"at most ctx + 1 = {cfg.ctx + 1} fit the model")
            loss = batch_loss(model, ids, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss_value = loss.item()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                seconds = elapsed + time.perf_counter() - t0
                log.append([step, round(loss_value, 4), round(seconds, 1)])
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
                save_state(step + 1)
    finally:  # an interrupted run keeps its last periodic checkpoint
        bar.close()
    if end < cfg.steps:
        save_state(end)
        return TrainResult(out_dir, log, loss_value, None, finished=False)

    model.eval()
    eval_loss = None
    if eval_stream is not None and len(eval_stream) > cfg.ctx + 1:
        eval_loss = round(stream_loss(model, eval_stream, cfg.ctx), 4)
    record = {
        **(info or {}), "steps": cfg.steps,
        "train_tokens": int(len(stream)) if stream is not None else None,
        "ctx": cfg.ctx, "batch": cfg.batch, "lr": cfg.lr, "seed": cfg.seed,
        "config": asdict(cfg), "log": log,
        "eval": None if eval_loss is None else {
            "loss_per_token": eval_loss, "tokens": int(len(eval_stream)),
            "note": "held-out texts, BOS-prefixed, consecutive windows of ctx tokens"},
        "seconds": round(elapsed + time.perf_counter() - t0, 1),
        "attn_only": "MLP output projections zeroed and frozen: blocks add only attention"
        if cfg.arch == "attn-only" else None,
        "manifest": base_manifest("extract train"),
    }
    _save_final(out_dir, model, tok, record, overwrite)
    shutil.rmtree(ckpt.parent, ignore_errors=True)
    return TrainResult(out_dir, log, loss_value, eval_loss)


def _prepare_data(data: Any, tokenizer: Any, cfg: TrainConfig, extra_tokens: Sequence[str],
                  eval_texts: Sequence[str] | None) -> tuple[BatchFn, Any, Any, Any]:
    """(sampler, train stream or None, eval stream or None, tokenizer); sets vocab_size."""
    from headprobe.tokenization.char import id_tokenizer

    if callable(data):
        if cfg.vocab_size <= 0 and tokenizer is None:
            raise UsageError("give vocab_size when training from a batch sampler")
        tok = tokenizer_from_spec(tokenizer, None) if tokenizer is not None else None
        if cfg.vocab_size <= 0:
            cfg.vocab_size = len(tok)
        return data, None, None, tok if tok is not None else id_tokenizer(cfg.vocab_size)
    data = list(data)
    if not data:
        raise UsageError("no training data")
    if not isinstance(data[0], str):
        stream = np.fromiter((int(i) for seq in data for i in seq), dtype=np.int64)
        if cfg.vocab_size <= 0:
            cfg.vocab_size = int(stream.max()) + 1
        tok = tokenizer_from_spec(tokenizer, None) if tokenizer is not None else id_tokenizer(
            cfg.vocab_size)
        return stream_sampler(stream, cfg.ctx), stream, None, tok
    if tokenizer is None:
        raise UsageError("training on texts needs a tokenizer (a directory, 'char' or 'bpe:N')")
    if eval_texts is None:
        n_eval = int(len(data) * cfg.eval_fraction) if len(data) >= 20 else 0
        n_eval = min(n_eval, 200)
        train_texts = data[:len(data) - n_eval]
        eval_texts = data[len(data) - n_eval:]
    else:
        train_texts = data
    tok = tokenizer_from_spec(tokenizer, train_texts, extra_tokens)
    cfg.vocab_size = cfg.vocab_size or len(tok)
    if cfg.vocab_size < len(tok):
        raise UsageError(f"vocab_size {cfg.vocab_size} is smaller than the tokenizer ({len(tok)})")
    stream = encode_stream(train_texts, tok)
    eval_stream = encode_stream(list(eval_texts), tok) if eval_texts else None
    return stream_sampler(stream, cfg.ctx), stream, eval_stream, tok


def _save_final(out_dir: Path, model: Any, tok: Any, record: dict[str, Any],
                overwrite: bool) -> None:
    model.generation_config.pad_token_id = model.config.eos_token_id
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "training.json", record)


# ---------------------------------------------------------------- command line


def read_corpus(source: str) -> tuple[list[str], list[str]]:
    """(texts, chat sender names) of a corpus SOURCE.

    SOURCE is ``chat:PATH`` (a WhatsApp-style export), ``chatgen:N`` (N synthetic chat
    messages) or anything the dataset stage reads (``datasets_build.sources``); a chat
    is cut into stories of whole messages (:func:`datasets_build.chatlog.chat_stories`).
    """
    from datasets_build import chatlog

    if chatlog.is_chat_source(source):
        chat = chatlog.read_chat_source(source)
        return chatlog.chat_stories(chat), chatlog.senders(chat)
    from datasets_build.sources import open_source

    texts = [t.strip() for t in open_source(source).stories()]
    return [t for t in texts if t], []


def add_train_arguments(parser: Any) -> None:
    """Arguments of ``python -m extract train``."""
    d = TrainConfig()
    parser.add_argument("--corpus", required=True,
                        help="training texts: a .txt file (stories split at <|endoftext|>), "
                             "chat:PATH, chatgen:N, or any dataset SOURCE")
    parser.add_argument("--out", help="model directory to write (default RUN/model)")
    parser.add_argument("--run", help="run directory (runs/NAME)")
    parser.add_argument("--arch", choices=ARCHES, default=d.arch,
                        help="gpt-neo, or attn-only (MLPs zeroed and frozen)")
    parser.add_argument("--layers", type=int, default=d.layers)
    parser.add_argument("--d-model", type=int, default=d.d_model)
    parser.add_argument("--heads", type=int, default=d.heads)
    parser.add_argument("--ctx", type=int, default=d.ctx, help="training window in tokens")
    parser.add_argument("--window", type=int, default=d.window,
                        help="attention window of the local layers")
    parser.add_argument("--tokenizer", default="char",
                        help="a tokenizer directory, 'char', or 'bpe:VOCAB' (default char)")
    parser.add_argument("--sender-tokens", action="store_true",
                        help="chat corpora: one dedicated token per sender name")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--warmup", type=int, default=d.warmup,
                        help="warm-up steps (default 5%% of --steps)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                        help="checkpoint every N steps to OUT.checkpoint/")
    parser.add_argument("--stop-after", type=int,
                        help="stop after N steps, keeping the checkpoint for --resume")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint of an interrupted run")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: Any) -> int:
    """Entry point of ``python -m extract train``."""
    from headprobe.rundir import resolve

    out = resolve(args.out, args.run, "model", "--out")
    if args.threads:
        torch.set_num_threads(args.threads)
    texts, senders = read_corpus(args.corpus)
    if not texts:
        raise UsageError(f"corpus {args.corpus!r} holds no text")
    if args.sender_tokens and not senders:
        raise UsageError("--sender-tokens needs a chat corpus (chat:PATH or chatgen:N)")
    extra = senders if args.sender_tokens else []
    cfg = TrainConfig(arch=args.arch, layers=args.layers, d_model=args.d_model,
                      heads=args.heads, ctx=args.ctx, window=args.window, steps=args.steps,
                      batch=args.batch, lr=args.lr, warmup=args.warmup, seed=args.seed,
                      ckpt_every=args.ckpt_every)
    info = {"corpus": args.corpus, "tokenizer": args.tokenizer,
            "sender_tokens": extra, "texts": len(texts)}
    result = train_model(texts, out, args.tokenizer, cfg, extra_tokens=extra,
                         resume=args.resume, overwrite=args.overwrite,
                         stop_after=args.stop_after, progress=not args.quiet, info=info)
    if not result.finished:
        print(f"stopped; checkpoint in {checkpoint_path(out).parent} (continue with --resume)")
        return 0
    ev = "" if result.eval_loss is None else f", held-out loss {result.eval_loss:.3f}"
    print(f"wrote {out} (final training loss {result.final_loss:.3f}{ev})")
    return 0
