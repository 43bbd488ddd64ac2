"""Does a chat model keep timestamps in order? Past mass and free-generation ordering.

**Past mass.** Each prompt is one chat message with timestamp ``t`` followed by the
beginning of the next header, cut just before one digit of the timestamp: for the
default ``--field minute``, ``[same date, same hour:`` so that the next token is the
minute's tens digit. The model's next-token distribution is summed by the first
character of each token; mass on digits smaller than the previous message's digit
at that place is *past* (the next message would be earlier than ``t``), the
previous digit itself is *same*, larger digits are *future*. Prompts whose previous
digit is 0 (no past exists) are skipped. Prompts come from messages of a synthetic
chat (``--source chatgen:N:SEED``, by default a seed the demo organism was not trained
on) or from a real export (``--source chat:PATH``).

**Free generations.** ``--generations`` samples continue a few real messages; their
timestamps are parsed and each consecutive pair is classed as forward, equal or
backward in time. The report gives the fraction going backwards, the distribution of
time differences and the mean delay after each sender.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from datasets_build import chatlog
from headprobe.errors import UsageError, opt
from probing.studies.common import (
    add_model_arguments,
    add_output_arguments,
    finish_study,
    format_table,
    load_study_model,
    model_name,
    output_dir,
)
from probing.studies.next_token import encode_prompts, next_token_probs
from probing.study_io import Array, Layout

HELP = "timestamp order of a chat model: mass on past digits, ordering of generations"
STUDY = "time-order"
FIELDS = ("hour", "minute", "second")
DEFAULT_SOURCE = "chatgen:2000:12345"
WITH_GENERATIONS = "with free generations"

PROMPTS = Array("prompts", ("prompt",), "str",
                "each prompt: messages, then the next header cut before the tens digit")
PREVIOUS_DIGIT = Array("previous_digit", ("prompt",), "int",
                       "the tens digit of the field in the last message's timestamp")
DIGIT_MASS = Array("digit_mass", ("prompt", "digit"), "float",
                   "next-token probability of the tokens starting with each digit 0-9")
MASS = {part: Array(f"{part}_mass", ("prompt",), "float", what) for part, what in (
    ("past", "mass on digits smaller than the previous one (an earlier timestamp)"),
    ("same", "mass on the previous digit itself"),
    ("future", "mass on larger digits (a later timestamp)"),
    ("non_digit", "mass on tokens that do not start with a digit"))}
GENERATIONS = Array("generations", ("generation",), "str", "the text of each free generation",
                    WITH_GENERATIONS)
GEN_DELTAS = Array("gen_deltas", ("pair",), "float",
                   "seconds from one generated timestamp to the next (negative: backwards)",
                   WITH_GENERATIONS)
GEN_AFTER_SENDER = Array("gen_after_sender", ("pair",), "str",
                         "sender of the earlier message of each pair", WITH_GENERATIONS)
LAYOUT = Layout(STUDY, (PROMPTS, PREVIOUS_DIGIT, DIGIT_MASS, *MASS.values(), GENERATIONS,
                        GEN_DELTAS, GEN_AFTER_SENDER))


# ---------------------------------------------------------------- past mass


def digit_prompts(chat: str, field: str, n: int, context: int = 1
                  ) -> tuple[list[str], np.ndarray]:
    """Up to ``n`` prompts cut before the tens digit of ``field`` of a following header.

    Each prompt is ``context`` consecutive messages, a newline, and the last message's
    header up to (not including) the tens digit of ``field``. Returns (prompts,
    previous tens digits [n_prompts]); messages whose digit there is 0 are skipped.
    """
    if field not in FIELDS:
        raise UsageError(f"unknown {opt('field')} {field!r}; choose from {', '.join(FIELDS)}")
    messages = chatlog.parse_chat(chat)
    prompts, digits = [], []
    for i in range(context - 1, len(messages)):
        msg = messages[i]
        if msg.is_system or msg.time is None:
            continue
        line = chat[msg.start:msg.end].split("\n")[0]
        m = chatlog.HEADER.match(line)
        if m is None or m.group(field) is None or len(m.group(field)) != 2:
            continue
        digit = int(m.group(field)[0])
        if digit == 0:
            continue
        first = messages[i - context + 1].start
        prompts.append(chat[first:msg.end] + "\n" + line[:m.start(field)])
        digits.append(digit)
        if len(prompts) == n:
            break
    return prompts, np.array(digits, dtype=np.int64)


def mass_by_first_char(probs: np.ndarray, tokenizer: Any, chars: str) -> np.ndarray:
    """Probability of tokens starting with each of ``chars``: [n_prompts, len(chars)]."""
    firsts = np.array([(tokenizer.decode([i]) or " ")[0] for i in range(probs.shape[1])])
    return np.stack([probs[:, firsts == c].sum(axis=1) for c in chars], axis=1)


def past_mass(digit_mass: np.ndarray, previous: np.ndarray) -> dict[str, np.ndarray]:
    """Split digit_mass [n, 10] by the previous digit [n]: past, same, future, other."""
    place = np.arange(10)[None, :]
    prev = previous[:, None]
    past = (digit_mass * (place < prev)).sum(axis=1)
    same = (digit_mass * (place == prev)).sum(axis=1)
    future = (digit_mass * (place > prev)).sum(axis=1)
    return {"past": past, "same": same, "future": future,
            "non_digit": np.clip(1.0 - digit_mass.sum(axis=1), 0.0, 1.0)}


# ---------------------------------------------------------------- free generations


@torch.inference_mode()
def sample(model: Any, prompts: list[np.ndarray], n_tokens: int, seed: int = 0,
           temperature: float = 1.0) -> list[np.ndarray]:
    """Sample ``n_tokens`` after each prompt (equal lengths): generated ids [n_tokens] each."""
    gen = torch.Generator().manual_seed(seed)
    n_ctx = int(model.cfg.n_ctx)
    width = min(len(p) for p in prompts)
    tokens = torch.tensor(np.stack([p[-width:] for p in prompts]), dtype=torch.long)
    device = next(model.parameters()).device
    out = []
    for _ in range(n_tokens):
        logits = model(tokens[:, -n_ctx:].to(device))[:, -1].float().cpu()
        probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen)
        out.append(nxt)
        tokens = torch.cat([tokens, nxt], dim=1)
    return list(torch.cat(out, dim=1).numpy())


def ordering(texts: list[str]) -> dict[str, Any]:
    """Consecutive timestamp pairs of generated chats: deltas (s) and previous senders."""
    deltas, after = [], []
    malformed = 0
    for text in texts:
        messages = [m for m in chatlog.parse_chat(text) if not m.is_system]
        for a, b in zip(messages, messages[1:], strict=False):
            if a.time is None or b.time is None:
                malformed += 1
                continue
            deltas.append((b.time - a.time).total_seconds())
            after.append(a.sender or "")
    return {"deltas": np.array(deltas, dtype=np.float64), "after": np.array(after, dtype=str),
            "malformed": malformed}


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, required=False)
    parser.add_argument("--source", default=DEFAULT_SOURCE,
                        help=f"chat to take prompts from: chatgen:N[:SEED] or chat:PATH "
                             f"(default {DEFAULT_SOURCE})")
    parser.add_argument("--field", choices=FIELDS, default="minute",
                        help="timestamp field whose tens digit is predicted (default minute)")
    parser.add_argument("--prompts", type=int, default=50, help="number of prompts (>= 1)")
    parser.add_argument("--context", type=int, default=1,
                        help="messages before the cut header (default 1)")
    parser.add_argument("--generations", type=int, default=16,
                        help="free generations for the ordering figure (0: none)")
    parser.add_argument("--gen-tokens", type=int, default=300, help="tokens per generation")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature of the generations")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_output_arguments(parser)


def _check(args: argparse.Namespace) -> None:
    if args.prompts < 1 or args.context < 1:
        raise UsageError("--prompts and --context must be at least 1")
    if args.generations < 0 or args.gen_tokens < 1:
        raise UsageError("--generations must be >= 0 and --gen-tokens >= 1")
    if args.temperature <= 0:
        raise UsageError("--temperature must be positive")


def run(args: argparse.Namespace) -> int:
    from headprobe.tokenization import bos_id, load_tokenizer

    _check(args)
    out = output_dir(args, STUDY)
    chat = chatlog.read_chat_source(args.source)
    prompts, previous = digit_prompts(chat, args.field, args.prompts, args.context)
    if not prompts:
        raise UsageError(f"{args.source} gives no prompt with a non-zero {args.field} tens digit")
    name = model_name(args)
    tok = load_tokenizer(name)
    model = load_study_model(name, args.device, args.model_dtype)
    bos = bos_id(tok)
    encoded = encode_prompts(tok, prompts, bos)
    cropped = sum(len(p) > int(model.cfg.n_ctx) for p in encoded)
    probs = next_token_probs(model, encoded, crop=True)
    digit_mass = mass_by_first_char(probs, tok, "0123456789")
    split = past_mass(digit_mass, previous)
    arrays: dict[str, Any] = {"prompts": np.array(prompts), "previous_digit": previous,
                              "digit_mass": digit_mass,
                              **{MASS[k].name: v for k, v in split.items()}}
    lines = [f"time order of {name}",
             f"past mass at the {args.field} tens digit over {len(prompts)} prompts "
             f"from {args.source}" + (f" ({cropped} cut to the model's context)"
                                      if cropped else "") + ":",
             format_table(["", "mean", "max"],
                          [[k, float(v.mean()), float(v.max())] for k, v in split.items()])]
    gen_meta: dict[str, Any] = {}
    if args.generations:
        lines.append("")
        lines += _generations(args, model, tok, chat, bos, arrays, gen_meta)
    meta = {"study": STUDY, "model": name, "source": args.source, "field": args.field,
            "n_prompts": len(prompts), "context": args.context, "cropped_prompts": cropped,
            "mean_past_mass": float(split["past"].mean()), **gen_meta}
    report = "\n".join(lines)
    return finish_study(out, LAYOUT, arrays, meta, report, args.overwrite)


def _generations(args: argparse.Namespace, model: Any, tok: Any, chat: str, bos: int | None,
                 arrays: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Sample, parse and summarise free generations; fills arrays/meta, returns report lines."""
    stories = chatlog.chat_stories(chat)
    starts = [s.split("\n")[0] + "\n" for s in stories[:args.generations]]
    ids = encode_prompts(tok, starts, bos)
    width = min(len(i) for i in ids)
    ids = [i[:width] for i in ids]  # equal lengths for one batch
    generated = sample(model, ids, args.gen_tokens, args.seed, args.temperature)
    texts = [tok.decode(list(p[1 if bos is not None else 0:]) + list(g))
             for p, g in zip(ids, generated, strict=True)]
    found = ordering(texts)
    deltas = found["deltas"]
    arrays.update({"generations": np.array(texts), "gen_deltas": deltas,
                   "gen_after_sender": found["after"]})
    n = len(deltas)
    backward = float((deltas < 0).mean()) if n else float("nan")
    meta.update({"generations": len(texts), "gen_pairs": n, "gen_backward": backward,
                 "gen_malformed": found["malformed"]})
    lines = [f"free generations: {len(texts)} x {args.gen_tokens} tokens, {n} consecutive "
             f"timestamp pairs ({found['malformed']} with an unreadable timestamp)"]
    if not n:
        return lines + ["backwards in time: n/a (no readable consecutive timestamps)"]
    q = np.percentile(deltas, [5, 25, 50, 75, 95])
    lines.append(f"backwards in time: {backward:.1%}; equal: {float((deltas == 0).mean()):.1%}")
    lines.append("time difference (s) percentiles 5/25/50/75/95: "
                 + " / ".join(f"{v:.0f}" for v in q))
    rows = []
    for sender in sorted(set(found["after"].tolist())):
        d = deltas[found["after"] == sender]
        rows.append([sender or "(system)", len(d), float(np.median(d))])
    lines.append(format_table(["after sender", "pairs", "median delay (s)"], rows))
    return lines
