"""Train small causal language models ("model organisms") and save them in HF format.

The trained model is a GPT-Neo like the shared TinyStories model or a rotary (Llama,
Qwen2) model (:mod:`.model`), saved
as a Hugging Face directory (``config.json``, ``model.safetensors``, tokenizer files,
``training.json``; :mod:`.model_dir`) that :func:`extract.models.load_model` boots like
any other model.

Training (:mod:`.loop`) is a plain PyTorch loop: AdamW, linear warm-up then cosine decay
to 10% of the peak rate (:mod:`.schedule`), gradient clipping at 1.0, random windows of
``ctx`` tokens cut from the BOS-joined token stream (:mod:`.data`). It is deterministic
for a seed on the CPU and checkpoints every ``ckpt_every`` steps to ``OUT.checkpoint/``
(:mod:`.checkpoint`) so an interrupted run can resume and end with exactly the weights of
an uninterrupted one. The final directory is written atomically; the checkpoint is
removed once it is in place. :mod:`.cli` is ``python -m extract train``.

Python use::

    from extract.training import train_model

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

from extract.training.checkpoint import checkpoint_path
from extract.training.config import ARCHES, TrainConfig
from extract.training.data import read_corpus
from extract.training.loop import TrainResult, train_model

__all__ = ["ARCHES", "TrainConfig", "TrainResult", "checkpoint_path", "read_corpus",
           "train_model"]
