"""Forward passes that return per-head activations for a batch of stories.

Both paths take right-padded input ids [batch, seq] (one story per row, position 0 at the
start of each row) and return site -> tensor, float sites in the ``dtype`` asked for
(float32 by default; the extractor asks for the storage dtype, so values are rounded once):

    query/z/query_rot   [batch, seq, n_layers, n_heads, d_head]
    key/value/key_rot   [batch, seq, n_layers, n_kv_heads, d_head]
    activity, entropy   [batch, seq, n_layers, n_heads]
    argmax              [batch, seq, n_layers, n_heads]   int64 (position in the story)

Right padding needs no attention mask: with causal attention a real token never sees the
pads after it, so its values equal those of an unpadded run; rows past a story's length
are garbage and are dropped by the caller.

- :mod:`~extract.forward.hooked`: :class:`HookForward` runs any model TransformerLens'
  bridge supports, reading its hooks (the general path);
- :mod:`~extract.forward.families` and :mod:`~extract.forward.fused`: :class:`FastForward`
  re-implements GPT-Neo, GPT-2 and the Llama family (Llama, Mistral, Qwen2) from their
  Hugging Face weights with fused attention (the fast path);
- :mod:`~extract.forward.check`: the fast path against hooks on the model's own
  projections, run before the fast path is used;
- :mod:`~extract.forward.attention`: masks, local attention, grouped queries, pattern
  statistics.
"""

from extract.forward.attention import (
    allocate,
    band_mask,
    local_attention,
    local_mask,
    pattern_stats,
)
from extract.forward.check import check_fast, projection_reference
from extract.forward.families import FAMILIES, unsupported_reason
from extract.forward.fused import PATTERN_SITES, FastForward, fast_supported
from extract.forward.hooked import HookForward, bridge_shape, rotation_source

VECTOR_SITES = ("key", "query", "value", "z", "key_rot", "query_rot")
FAST_MODEL_TYPES = tuple(FAMILIES)

__all__ = ["FAMILIES", "FAST_MODEL_TYPES", "PATTERN_SITES", "VECTOR_SITES", "FastForward",
           "HookForward", "allocate", "band_mask", "bridge_shape", "check_fast",
           "fast_supported", "local_attention", "local_mask", "pattern_stats",
           "projection_reference", "rotation_source", "unsupported_reason"]
