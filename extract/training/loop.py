"""The training loop: next-token cross-entropy, AdamW, clipping, periodic checkpoints.

Deterministic for a seed on the CPU: the model is initialised from ``cfg.seed`` (on the
CPU, whatever the device) and every batch is drawn from one seeded generator, whose state
the checkpoints keep. On another device the model and batches move there; a compute dtype
other than float32 trains under autocast (weights and optimiser stay float32), with
gradient scaling for float16 on CUDA.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.training.checkpoint import (
    check_outputs,
    corpus_fingerprint,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from extract.training.config import TrainConfig, make_config
from extract.training.data import BatchFn, TrainingData, prepare_data, split_batch
from extract.training.model import build_model
from extract.training.model_dir import save_model, training_record
from extract.training.schedule import make_optimizer, set_lr
from headprobe.devices import DEFAULT_MODEL_DTYPE, resolve_device, torch_dtype
from headprobe.errors import UsageError
from headprobe.tokenization import bos_id

CLIP_NORM = 1.0


@dataclass
class TrainResult:
    out_dir: Path
    log: list[list[float]]     # [step, loss, seconds] rows
    final_loss: float
    eval_loss: float | None
    finished: bool = True      # False: stopped early, checkpoint kept for resume


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
    x = torch.from_numpy(stream[:n * ctx + 1]).to(next(model.parameters()).device)
    windows = torch.stack([x[i * ctx:(i + 1) * ctx + 1] for i in range(n)])
    total = 0.0
    for i in range(0, n, batch):
        chunk = windows[i:i + batch]
        total += float(batch_loss(model, chunk, None)) * len(chunk)
    return total / n


class Trainer:
    """The model, optimiser and sampling generator of one run, and where it has got to.

    step: the first step still to take; log: [step, loss, seconds] rows; elapsed: seconds
    spent before this process (a resumed run's earlier part); device, model_dtype: where
    and in which dtype the model computes.
    """

    def __init__(self, cfg: TrainConfig, data: TrainingData, ckpt: Path, device: str = "cpu",
                 model_dtype: str = DEFAULT_MODEL_DTYPE):
        self.cfg, self.data, self.ckpt = cfg, data, ckpt
        self.device = resolve_device(device)
        self.dtype = torch_dtype(model_dtype)
        self.model = build_model(cfg, cfg.vocab_size, bos_id(data.tokenizer) or 0)
        self.model.to(self.device)
        self.optimizer = make_optimizer(self.model, cfg)
        kind = torch.device(self.device).type
        use_scaler = self.dtype == torch.float16 and kind == "cuda"
        self.scaler = torch.amp.GradScaler(kind) if use_scaler else None
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.fingerprint = corpus_fingerprint(data.stream)
        self.step, self.log, self.elapsed = 0, [], 0.0
        self.t0 = time.perf_counter()

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the compute dtype (nothing for float32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=self.dtype)

    def resume(self) -> None:
        """Continue from the checkpoint (UsageError when it belongs to another run)."""
        state = load_checkpoint(self.ckpt, self.cfg, self.fingerprint)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.gen.set_state(state["rng"])
        self.step, self.log, self.elapsed = state["step"], state["log"], state["elapsed"]

    def seconds(self) -> float:
        """Training time so far, earlier processes included."""
        return self.elapsed + time.perf_counter() - self.t0

    def save(self, step: int) -> None:
        """Checkpoint the state reached before ``step``."""
        save_checkpoint(self.ckpt, {
            "model": self.model.state_dict(), "optim": self.optimizer.state_dict(),
            "rng": self.gen.get_state(), "step": step, "log": self.log,
            "elapsed": self.seconds(), "config": asdict(self.cfg),
            "fingerprint": self.fingerprint,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None})

    def sample(self, step: int) -> Any:
        """The batch of ``step``: ``batch`` windows, or twice as many of half the length
        in the run's last ``short_steps`` (the same tokens per step)."""
        if step >= self.cfg.steps - self.cfg.short_steps:
            return self.data.short_sample(self.gen, 2 * self.cfg.batch)
        return self.data.sample(self.gen, self.cfg.batch)

    def train_step(self, step: int) -> float:
        """One optimiser step on a fresh batch; returns its loss."""
        set_lr(self.optimizer, step, self.cfg)
        ids, mask = split_batch(self.sample(step))
        if ids.shape[1] > self.cfg.ctx + 1:
            raise UsageError(f"the sampler gave sequences of {ids.shape[1]} tokens; "
                             f"at most ctx + 1 = {self.cfg.ctx + 1} fit the model")
        ids = ids.to(self.device)
        with self.autocast():
            loss = batch_loss(self.model, ids, None if mask is None else mask.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP_NORM)
            self.optimizer.step()
        else:   # float16 gradients scaled up, unscaled before clipping
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP_NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.item()

    def run(self, end: int, progress: bool) -> float:
        """Take steps up to ``end`` (exclusive), logging and checkpointing; the last loss."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, desc="train",
                   dynamic_ncols=True)
        self.model.train()
        self.t0 = time.perf_counter()
        loss = float("nan")
        try:
            for step in range(self.step, end):
                loss = self.train_step(step)
                if step % cfg.log_every == 0 or step == cfg.steps - 1:
                    self.log.append([step, round(loss, 4), round(self.seconds(), 1)])
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
                    self.save(step + 1)
        finally:  # an interrupted run keeps its last periodic checkpoint
            bar.close()
        return loss

    def evaluate(self) -> float | None:
        """Mean loss per token on the held-out stream, if there is one longer than a window."""
        self.model.eval()
        stream = self.data.eval_stream
        if stream is None or len(stream) <= self.cfg.ctx + 1:
            return None
        with self.autocast():
            return round(stream_loss(self.model, stream, self.cfg.ctx), 4)


def train_model(data: Sequence[str] | Sequence[Sequence[int]] | BatchFn, out_dir: str | Path,
                tokenizer: Any = None, config: TrainConfig | None = None, *,
                extra_tokens: Sequence[str] = (), eval_texts: Sequence[str] | None = None,
                resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
                progress: bool = True, info: dict[str, Any] | None = None,
                device: str = "cpu", model_dtype: str = DEFAULT_MODEL_DTYPE,
                **overrides: Any) -> TrainResult:
    """Train a causal LM on ``data`` and save it as a HF directory ``out_dir``.

    data: texts (with ``tokenizer``: object, directory, "char" or "bpe:VOCAB"), token-id
    sequences (each already starting with BOS), or ``sample(gen, batch)`` returning ids
    [batch, seq <= ctx + 1] or (ids, loss_mask [batch, seq - 1]). ``config`` fields can be
    given as keyword arguments (``steps=300, layers=2``). ``stop_after`` ends the run
    after that many steps with a checkpoint but no model (continue with ``resume``).
    ``info`` is added to training.json. device: cpu, cuda, cuda:N, mps or 'auto' (cuda when
    available); model_dtype: the compute dtype ('float32', 'bfloat16', 'float16').
    """
    cfg = make_config(config, overrides)
    out_dir = Path(out_dir)
    ckpt = check_outputs(out_dir, resume, overwrite)
    prepared = prepare_data(data, tokenizer, cfg, extra_tokens, eval_texts)
    trainer = Trainer(cfg, prepared, ckpt, device, model_dtype)
    info = {**(info or {}), "device": trainer.device, "model_dtype": model_dtype}
    if resume:
        trainer.resume()
    end = cfg.steps if stop_after is None else min(cfg.steps, trainer.step + stop_after)
    loss = trainer.run(end, progress)
    if end < cfg.steps:
        trainer.save(end)
        return TrainResult(out_dir, trainer.log, loss, None, finished=False)
    eval_loss = trainer.evaluate()
    record = training_record(cfg, prepared, trainer.log, eval_loss, trainer.seconds(), info)
    save_model(out_dir, trainer.model, prepared.tokenizer, record, overwrite)
    remove_checkpoint(ckpt)
    return TrainResult(out_dir, trainer.log, loss, eval_loss)
