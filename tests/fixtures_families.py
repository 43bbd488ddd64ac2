"""Session fixtures: tiny randomly initialised models of every tested family, saved with
the GPT-2 tokenizer, and a small tagged dataset of TinyStories for them.

Each model has 2 layers and 4 query heads of d_head 16; the grouped-query families
(Llama, Qwen2, Gemma 2) have 2 key/value heads. Windows are short (32 tokens) so that
local and sliding-window layers matter on TinyStories stories.
"""

from pathlib import Path

import pytest
import torch

VOCAB = 50257   # the GPT-2 tokenizer
EOS = 50256
N_CTX = 1024
COMMON = dict(vocab_size=VOCAB, bos_token_id=EOS, eos_token_id=EOS)
GQA = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
           intermediate_size=128, max_position_embeddings=N_CTX, **COMMON)


def family_config(family: str):
    """The transformers config of the tiny model of ``family``."""
    import transformers as tf

    configs = {
        "gpt2": lambda: tf.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=N_CTX,
                                      **COMMON),
        "gpt_neo": lambda: tf.GPTNeoConfig(
            num_layers=2, num_heads=4, hidden_size=64, max_position_embeddings=N_CTX,
            attention_types=[[["global", "local"], 1]], window_size=32, **COMMON),
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=128,
            max_position_embeddings=N_CTX, rotary_pct=0.5, **COMMON),
        "llama": lambda: tf.LlamaConfig(**GQA),
        "qwen2": lambda: tf.Qwen2Config(use_sliding_window=True, sliding_window=32,
                                        max_window_layers=1, **GQA),
        "gemma2": lambda: tf.Gemma2Config(head_dim=16, sliding_window=32, **GQA),
    }
    return configs[family]()


FAMILIES = ("gpt2", "gpt_neo", "gpt_neox", "llama", "qwen2", "gemma2")


def save_tiny_model(out: Path, config, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised causal LM of ``config`` saved in ``out`` with the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def family_models(tmp_path_factory, gpt2_tokenizer) -> dict[str, Path]:
    """family -> directory of its tiny random model (HF format, GPT-2 tokenizer)."""
    root = tmp_path_factory.mktemp("families")
    return {family: save_tiny_model(root / family, family_config(family), gpt2_tokenizer)
            for family in FAMILIES}


@pytest.fixture(scope="session")
def gpt2_dataset(tmp_path_factory, valid_text, gpt2_tokenizer) -> Path:
    """First 12 stories of valid-3117.txt tagged and tokenized with the GPT-2 tokenizer."""
    from datasets_build.build import build_dataset

    out = tmp_path_factory.mktemp("gpt2_dataset") / "dataset"
    return build_dataset(str(valid_text), str(gpt2_tokenizer), out, limit=12,
                         test_fraction=0.25, seed=0)
