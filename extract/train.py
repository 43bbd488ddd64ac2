"""Training model organisms: the names callers import from ``extract.train``.

The code lives in :mod:`extract.training` (settings, model, data, loop, checkpoints,
command line); see its docstring.
"""

from extract.training.checkpoint import CHECKPOINT_SUFFIX, checkpoint_path
from extract.training.cli import add_train_arguments, run_train
from extract.training.config import ARCHES, FAMILIES, TrainConfig
from extract.training.data import BatchFn, encode_stream, read_corpus, stream_sampler
from extract.training.loop import TrainResult, batch_loss, stream_loss, train_model
from extract.training.model import (
    build_model,
    gpt_neo_config,
    make_attn_only,
    model_config,
    rotary_config,
)
from extract.training.schedule import lr_at, make_optimizer

__all__ = ["ARCHES", "CHECKPOINT_SUFFIX", "FAMILIES", "BatchFn", "TrainConfig", "TrainResult",
           "add_train_arguments", "batch_loss", "build_model", "checkpoint_path",
           "encode_stream", "gpt_neo_config", "lr_at", "make_attn_only", "make_optimizer",
           "model_config", "read_corpus", "rotary_config", "run_train", "stream_loss",
           "stream_sampler", "train_model"]
