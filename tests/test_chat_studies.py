"""The chat case studies (next-token sweep, time order) on a tiny trained chat model."""

import argparse

import numpy as np
import pytest

from datasets_build import chatlog
from headprobe.errors import UsageError
from probing.studies import next_token, time_order
from probing.study_io import read_study

PROMPT = r"[04/11/2023, 18:21:13] {SENDER}: ok lunch\n[04/11/2023, 18:"


def study_args(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_next_token_sweep_over_senders(chat_organism, tmp_path, capsys):
    senders = chatlog.sender_names(6)
    args = study_args(next_token, ["--model", str(chat_organism), "--prompt", PROMPT,
                                   "--vary", "SENDER=" + ",".join(senders), "-k", "3",
                                   "--out", str(tmp_path / "nt")])
    assert next_token.run(args) == 0
    res = read_study(tmp_path / "nt")
    assert res.study == "next-token"
    assert res.arrays["values"].tolist() == senders
    assert res.arrays["prompts"][0].endswith("18:") and "Member 1: ok" in res.arrays["prompts"][0]
    probs, full = res.arrays["probs"], res.arrays["full_probs"]
    assert probs.shape == (6, len(res.arrays["tokens"])) and 3 <= probs.shape[1] <= 18
    np.testing.assert_allclose(full.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(probs, full[:, res.arrays["token_ids"]])
    # the prompts differ, and so do the predictions
    assert np.abs(full[0] - full[-1]).max() > 0
    # after "18:" the model expects a minute digit
    digits = [i for i, t in enumerate(res.arrays["tokens"]) if t.isdigit()]
    assert probs[:, digits].sum(axis=1).min() > 0.5
    assert "Member 6" in capsys.readouterr().out
    with pytest.raises(UsageError, match="already exists"):
        next_token.run(args)


def test_next_token_single_prompt_and_bad_input(chat_organism, tmp_path):
    args = study_args(next_token, ["--model", str(chat_organism), "--prompt",
                                   "[04/11/2023, 18:2", "--out", str(tmp_path / "one")])
    assert next_token.run(args) == 0
    res = read_study(tmp_path / "one")
    assert res.arrays["probs"].shape[0] == 1
    assert "probability" in res.report
    bad = study_args(next_token, ["--model", str(chat_organism), "--prompt", "x",
                                  "--vary", "NAME=a,b", "--out", str(tmp_path / "bad")])
    with pytest.raises(UsageError, match="placeholder"):
        next_token.run(bad)
    assert next_token.unescape(r"a\nb\\n") == "a\nb\\n"


def test_digit_prompts_cut_before_the_tens_digit():
    chat = chatlog.generate_chat(300, seed=4)
    prompts, previous = time_order.digit_prompts(chat, "minute", 20)
    assert len(prompts) == 20 and (previous >= 1).all()
    for prompt, digit in zip(prompts, previous, strict=True):
        last_header = prompt.split("\n")[-1]
        first_line = prompt.split("\n")[0]
        assert first_line.startswith(last_header)  # same date and hour
        assert first_line[len(last_header)] == str(digit)
    mass = np.zeros((3, 10))
    mass[0, [1, 2]] = 0.5
    mass[1, [3, 4]] = [0.25, 0.5]
    split = time_order.past_mass(mass, np.array([2, 4, 3]))
    np.testing.assert_allclose(split["past"], [0.5, 0.25, 0.0])
    np.testing.assert_allclose(split["same"], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(split["non_digit"], [0.0, 0.25, 1.0])


def test_time_order_study(chat_organism, tmp_path):
    args = study_args(time_order, ["--model", str(chat_organism), "--prompts", "12",
                                   "--generations", "3", "--gen-tokens", "120",
                                   "--out", str(tmp_path / "to")])
    assert time_order.run(args) == 0
    res = read_study(tmp_path / "to")
    n = len(res.arrays["prompts"])
    assert n == 12 and res.arrays["digit_mass"].shape == (12, 10)
    total = sum(res.arrays[f"{k}_mass"] for k in ("past", "same", "future", "non_digit"))
    np.testing.assert_allclose(total, 1.0, atol=1e-4)
    assert res.meta["mean_past_mass"] == pytest.approx(res.arrays["past_mass"].mean())
    assert res.arrays["digit_mass"].sum(axis=1).mean() > 0.5
    gens = res.arrays["generations"]
    assert len(gens) == 3
    assert all(g.startswith("[") and len(g) > 120 for g in gens)
    assert res.meta["gen_pairs"] == len(res.arrays["gen_deltas"])
    assert "backwards in time" in res.report


def test_ordering_of_parsed_generations():
    text = ("[06/03/2021, 09:00:10] Member 1: a\n[06/03/2021, 09:00:40] Member 2: b\n"
            "[06/03/2021, 08:59:40] Member 1: c\n[31/02/2021, 09:00:00] Member 3: d\n")
    found = time_order.ordering([text])
    assert found["deltas"].tolist() == [30.0, -60.0]
    assert found["after"].tolist() == ["Member 1", "Member 2"]
    assert found["malformed"] == 1
