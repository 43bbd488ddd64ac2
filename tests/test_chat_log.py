"""Chat logs: reader, structure tags, synthetic generator, the structure-tagged dataset."""

from datetime import datetime

import numpy as np
import pytest

from datasets_build import chatlog
from headprobe.errors import UsageError

EXPORT = (
    "[06/03/2021, 9:04:30] Messages are end-to-end encrypted.\n"
    "[06/03/2021, 9:04:40] Member 2: first line\n"
    "second line: still the same message\n"
    "[06/03/2021, 9:04:53] Member 9: hi\n"
    "[07/03/21, 10:11] Member 2 joined using this group's invite link\n"
    "[07/03/2021, 10:12:05] Member 6: a: b\n"
)


def test_reader_handles_multiline_system_lines_and_short_formats():
    msgs = chatlog.parse_chat(EXPORT)
    assert [m.sender for m in msgs] == [None, "Member 2", "Member 9", None, "Member 6"]
    assert msgs[1].text == "first line\nsecond line: still the same message"
    assert EXPORT[msgs[1].start:msgs[1].end].endswith("still the same message")
    assert msgs[0].is_system and msgs[3].is_system
    assert msgs[0].time == datetime(2021, 3, 6, 9, 4, 30)
    assert msgs[3].time == datetime(2021, 3, 7, 10, 11, 0)
    assert msgs[4].text == "a: b"
    assert chatlog.senders(EXPORT) == ["Member 2", "Member 9", "Member 6"]
    mdy = chatlog.parse_chat("[03/06/2021, 9:04:30] A: x\n", date_order="mdy")
    assert mdy[0].time == datetime(2021, 3, 6, 9, 4, 30)


def test_structure_tags_per_character():
    line = "[06/03/2021, 09:04:30] Member 2: hi\nthere\n[06/03/2021, 09:05:00] joined\n"
    tags = chatlog.fine_tags(line)
    assert len(tags) == len(line)
    expect = {0: "open_bracket", 1: "day.tens", 2: "day.ones", 3: "date_slash",
              4: "month.tens", 7: "year.thousands", 10: "year.ones", 11: "comma",
              12: "space", 13: "hour.tens", 16: "minute.tens", 17: "minute.ones",
              19: "second.tens", 21: "close_bracket", 23: "sender", 30: "sender",
              31: "sender_colon", 33: "message", 35: "message", 36: "message",
              41: "newline", 66: "system"}
    for pos, tag in expect.items():
        assert tags[pos] == tag, (pos, line[pos])
    fine, coarse = chatlog.char_tags(line)
    assert fine.shape == coarse.shape == (len(line),)
    coarse_names = [chatlog.COARSE_TAGS[i] for i in coarse]
    assert coarse_names[16] == "minute" and coarse_names[31] == "separator"
    assert coarse_names[66] == "message" and coarse_names[23] == "sender"
    one_digit = chatlog.fine_tags("[06/03/2021, 9:04:30] A: x")
    assert one_digit[13] == "hour.ones" and one_digit[15] == "minute.tens"


def test_generator_is_deterministic_and_plants_its_regularities():
    a, b = chatlog.generate_chat(3000, seed=5), chatlog.generate_chat(3000, seed=5)
    assert a == b and a != chatlog.generate_chat(3000, seed=6)
    msgs = chatlog.parse_chat(a)
    assert len(msgs) == 3000
    times = [m.time for m in msgs]
    assert all(t2 > t1 for t1, t2 in zip(times, times[1:], strict=False))
    assert any("\n" in m.text for m in msgs) and any(m.is_system for m in msgs)
    words = {w for m in msgs if not m.is_system for w in m.text.split()}
    assert words <= set(chatlog.WORDS)
    delay: dict[str, list[float]] = {}
    last_sender = None
    for m1, m2 in zip(msgs, msgs[1:], strict=False):
        if m1.sender:
            last_sender = m1.sender
        gap = (m2.time - m1.time).total_seconds()
        if last_sender and gap < 3600:
            delay.setdefault(last_sender, []).append(gap)
    medians = [np.median(delay[s]) for s in chatlog.sender_names(6)]
    assert medians[0] * 8 < medians[-1]  # Member 1 is answered much faster than Member 6
    assert np.all(np.diff(medians) > 0)


def test_chat_stories_keep_whole_messages():
    chat = chatlog.generate_chat(200, seed=1)
    stories = chatlog.chat_stories(chat, max_chars=120)
    assert "\n".join(stories) + "\n" == chat
    n_messages = sum(len(chatlog.parse_chat(s)) for s in stories)
    assert n_messages == len(chatlog.parse_chat(chat))
    long = [s for s in stories if len(s) > 120]
    assert all(len(chatlog.parse_chat(s)) == 1 for s in long)


def test_chat_sources(tmp_path):
    path = tmp_path / "export.txt"
    path.write_text(EXPORT)
    assert chatlog.read_chat_source(f"chat:{path}") == EXPORT
    assert chatlog.read_chat_source("chatgen:10:2") == chatlog.generate_chat(10, 2)
    with pytest.raises(UsageError, match="chatgen:N"):
        chatlog.read_chat_source("chatgen:ten")
    with pytest.raises(UsageError, match="does not exist"):
        chatlog.read_chat_source(f"chat:{tmp_path / 'missing.txt'}")
    (tmp_path / "plain.txt").write_text("no chat here\n")
    with pytest.raises(UsageError, match="holds no"):
        chatlog.read_chat_source(f"chat:{tmp_path / 'plain.txt'}")


def test_structure_tagged_dataset_from_a_chat(tmp_path):
    from datasets_build.build import build_dataset
    from datasets_build.dataset import load_tagged_dataset
    from headprobe.tokenization.char import char_tokenizer

    chat = chatlog.generate_chat(60, seed=2)
    tok = char_tokenizer([chat], chatlog.sender_names(6))
    tok.save_pretrained(tmp_path / "tok")
    out = build_dataset("chatgen:60:2", str(tmp_path / "tok"), tmp_path / "ds",
                        tagset="structure")
    ds = load_tagged_dataset(out)
    assert ds.tags == chatlog.structure_vocabularies()
    assert ds.manifest["tagset"] == "structure"
    table = ds.token_table()
    stories = ds.story_table()
    fine = np.array(ds.tags["fine"])[table["fine_tag"]]
    coarse = np.array(ds.tags["coarse"])[table["coarse_tag"]]
    assert fine[table["position"] == 0].tolist() == ["BOS"] * ds.n_stories
    first = stories["text"][0]
    rows = np.flatnonzero(table["story_id"] == 0)[1:]
    chars = [first[s:e] for s, e in zip(table["char_start"][rows], table["char_end"][rows],
                                        strict=True)]
    assert chars[:3] == ["[", "0", "6"] and "Member" in "".join(chars)
    expected = chatlog.fine_tags(first)
    for row, start, piece in zip(rows, table["char_start"][rows], chars, strict=True):
        if piece.isspace():
            assert fine[row] == "SPACE"
        else:
            assert fine[row] == expected[start]
    sender_rows = rows[[c.startswith("Member") for c in chars]]
    assert len(sender_rows) and set(coarse[sender_rows]) == {"sender"}
    assert not table["straddle"].any()


def test_chat_sources_open_through_the_dataset_sources():
    """The format module stands alone; sources opens a chat as a corpus with its senders."""
    import subprocess
    import sys

    from datasets_build.sources import open_source

    source = open_source("chatgen:40:2")
    chat = chatlog.generate_chat(40, 2)
    assert source.kind == "chat" and list(source.stories()) == chatlog.chat_stories(chat)
    assert source.info["senders"] == chatlog.senders(chat)
    assert source.info["messages"] == len(chatlog.parse_chat(chat))
    assert len(list(open_source("chatgen:40:2", limit=2).stories())) == 2
    code = ("import sys, datasets_build.chatlog; "
            "print('datasets_build.sources' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "False"
