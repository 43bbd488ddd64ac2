"""Next-token probabilities for a prompt, and for a sweep of one substituted field.

``--prompt`` is run through the model (BOS first, as in training) and the ``-k`` most
likely next tokens are reported. With ``--vary NAME=v1,v2,...`` the prompt holds a
placeholder ``{NAME}`` that is replaced by each value in turn; the table then has one
row per value and one column per token among the top ``k`` of any value, so one can
read how the prediction moves with the field (for a chat model: who sent the last
message, and how soon the next timestamp is expected).

In prompts, ``\\n`` and ``\\t`` stand for a newline and a tab.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from headprobe.cli import split_list
from headprobe.errors import UsageError, opt
from probing.studies.common import (
    add_model_arguments,
    add_output_arguments,
    finish_study,
    format_table,
    load_study_model,
    model_name,
    output_dir,
    padded,
)
from probing.study_io import Array, Layout

HELP = "next-token probability table for a prompt, optionally swept over one field"
STUDY = "next-token"

VALUES = Array("values", ("value",), "str",
               "each value substituted for the placeholder (one empty value without a sweep)")
PROMPTS = Array("prompts", ("value",), "str", "the prompt run for each value")
TOKEN_IDS = Array("token_ids", ("token",), "int",
                  "ids of the tokens among the top k of any prompt, by mean probability")
TOKENS = Array("tokens", ("token",), "str", "text of those tokens")
PROBS = Array("probs", ("value", "token"), "float",
              "probability of each of those tokens as the next token after each prompt")
FULL_PROBS = Array("full_probs", ("value", "vocab"), "float",
                   "the whole next-token distribution after each prompt")
LAYOUT = Layout(STUDY, (VALUES, PROMPTS, TOKEN_IDS, TOKENS, PROBS, FULL_PROBS))


def unescape(text: str) -> str:
    """``\\n`` -> newline, ``\\t`` -> tab, ``\\\\`` -> backslash."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_vary(spec: str | None) -> tuple[str, list[str]] | None:
    """``NAME=v1,v2`` -> (NAME, [v1, v2]); None for None."""
    if spec is None:
        return None
    name, sep, values = spec.partition("=")
    if not sep or not name.strip() or not split_list(values):
        raise UsageError(f"bad {opt('vary')} {spec!r}; write NAME=value1,value2,...")
    return name.strip(), split_list(values)


def encode_prompts(tokenizer: Any, prompts: Sequence[str], bos: int | None) -> list[np.ndarray]:
    """Token ids of each prompt, BOS first when ``bos`` is not None."""
    out = []
    for text in prompts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(np.asarray(([bos] if bos is not None else []) + list(ids), dtype=np.int64))
    return out


@torch.inference_mode()
def next_token_probs(model: Any, prompts: Sequence[np.ndarray], batch: int = 32,
                     crop: bool = False) -> np.ndarray:
    """Softmax of the logits after the last token of each prompt: [n_prompts, d_vocab].

    A prompt longer than the model's context is refused, or with ``crop`` cut to its
    last ``n_ctx`` tokens.
    """
    n_ctx = int(model.cfg.n_ctx)
    if crop:
        prompts = [p[-n_ctx:] for p in prompts]
    if any(len(p) > n_ctx for p in prompts):
        raise UsageError(f"a prompt is longer than the model's context of {n_ctx} tokens")
    if any(len(p) == 0 for p in prompts):
        raise UsageError("empty prompt")
    rows = []
    for i in range(0, len(prompts), batch):
        group = prompts[i:i + batch]
        device = next(model.parameters()).device
        logits = model(padded(group, str(device)))
        last = torch.tensor([len(p) - 1 for p in group], device=logits.device)
        picked = logits[torch.arange(len(group), device=logits.device), last]
        rows.append(torch.softmax(picked.float(), dim=-1).cpu().numpy())
    return np.concatenate(rows)


def top_columns(probs: np.ndarray, k: int) -> np.ndarray:
    """Token ids among the top ``k`` of any row of probs [n, d_vocab], by mean probability."""
    top = np.unique(np.argsort(-probs, axis=1)[:, :k])
    return top[np.argsort(-probs[:, top].mean(axis=0), kind="stable")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, required=False)
    parser.add_argument("--prompt", help="the prompt (\\n = newline); with --vary it holds "
                                         "{NAME} (default: none; give --prompt or --prompt-file)")
    parser.add_argument("--prompt-file", help="read the prompt from this file instead "
                                              "(default: none)")
    parser.add_argument("--vary", metavar="NAME=V1,V2,...",
                        help="substitute each value for {NAME} in the prompt (default: the "
                             "prompt as it is)")
    parser.add_argument("-k", "--top-k", type=int, default=10, help="tokens per prompt")
    parser.add_argument("--no-bos", action="store_true", help="do not start with BOS")
    add_output_arguments(parser)


def read_prompt(args: argparse.Namespace) -> str:
    if bool(args.prompt) == bool(args.prompt_file):
        raise UsageError("give exactly one of --prompt TEXT or --prompt-file FILE")
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as fh:
                return fh.read().rstrip("\n")
        except OSError as exc:
            raise UsageError(f"cannot read --prompt-file: {exc.strerror}") from exc
    return unescape(args.prompt)


def run(args: argparse.Namespace) -> int:
    from headprobe.tokenization import bos_id, load_tokenizer

    if args.top_k < 1:
        raise UsageError("-k must be at least 1")
    prompt = read_prompt(args)
    vary = parse_vary(args.vary)
    if vary and "{" + vary[0] + "}" not in prompt:
        raise UsageError(f"--vary {vary[0]}: the prompt has no {{{vary[0]}}} placeholder")
    values = vary[1] if vary else [""]
    prompts = [prompt.replace("{" + vary[0] + "}", v) for v in values] if vary else [prompt]
    out = output_dir(args, STUDY)
    name = model_name(args)
    tok = load_tokenizer(name)
    model = load_study_model(name, args.device, args.model_dtype)
    bos = None if args.no_bos else bos_id(tok)
    probs = next_token_probs(model, encode_prompts(tok, prompts, bos))
    cols = top_columns(probs, args.top_k)
    labels = [tok.decode([int(i)]) for i in cols]
    table = probs[:, cols]
    if vary:
        header = [vary[0], *(repr(s) for s in labels)]
        rows = [[v, *(f"{100 * p:.2f}%" for p in row)]
                for v, row in zip(values, table, strict=True)]
    else:
        order = np.argsort(-table[0], kind="stable")[:args.top_k]
        header = ["next token", "probability"]
        rows = [[repr(labels[j]), f"{100 * table[0, j]:.2f}%"] for j in order]
    report = (f"next-token probabilities of {name}\nprompt: {prompt!r}\n\n"
              + format_table(header, rows))
    meta = {"study": STUDY, "model": name, "prompt": prompt, "bos": bos,
            "vary": vary[0] if vary else None, "k": args.top_k}
    arrays = {"values": np.array(values), "prompts": np.array(prompts), "token_ids": cols,
              "tokens": np.array(labels), "probs": table,
              "full_probs": probs.astype(np.float32)}
    return finish_study(out, LAYOUT, arrays, meta, report, args.overwrite)
