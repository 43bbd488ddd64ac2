"""Synthetic children's stories, generated deterministically, so every stage runs with no data.

The stories are built from sentence templates and word lists with a seeded random
generator. They carry the regularities the probes look for and a small model can learn:
named characters who recur, dialogue in double quotation marks closed by ``said``/``asked``,
past-tense narration, and possessive pronouns (``his``/``her``/``their``) before nouns.

Dialogue and narration share a bank of remarks ("the kite is red" / "the kite was red"):
spoken in the present tense inside quotation marks, told in the past tense outside them.
Which verb comes next, and whether a sentence ends with ``."`` or ``.``, so depends on
whether the text is inside a quotation, which a model can only learn by looking back at
the opening mark: the demo's quotation head.

Story ``i`` depends only on ``(seed, i)``, so ``demo_stories(30)`` is the start of
``demo_stories(100)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

GIRLS = ("Lily", "Mia", "Sue", "Anna", "Emma", "Zoe", "Lucy", "Ella", "Rosa", "Kim", "Amy", "Nora")
BOYS = ("Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn", "Joe", "Dan", "Otto", "Raj")
OBJECTS = ("ball", "kite", "hat", "book", "doll", "boat", "cake", "box", "drum", "bike",
           "teddy bear", "toy car", "shell", "flower", "balloon", "blanket", "cup", "crayon")
ADJECTIVES = ("red", "big", "little", "shiny", "soft", "old", "new", "blue", "yellow", "funny",
              "pretty", "green", "tiny", "fluffy")
PLACES = ("park", "garden", "beach", "forest", "kitchen", "school", "farm", "river", "hill",
          "playground")
ANIMALS = ("dog", "cat", "bird", "frog", "duck", "rabbit", "puppy", "kitten", "squirrel", "cow")
FEELINGS = ("happy", "sad", "scared", "excited", "angry", "surprised", "tired", "proud")
GAMES = ("hide and seek", "tag", "catch", "with blocks", "in the sand", "with the water")
WEATHER = ("sunny", "windy", "rainy", "cold", "warm")
SPOTS = ("under a tree", "behind the bench", "in the tall grass", "near the pond", "under the bed",
         "on a high branch", "in a big hole")
# remarks told in either tense: (template, present-tense verbs, past-tense verbs)
REMARKS = (
    ("The {thing} {0} {adj}.", ("is",), ("was",)),
    ("The {animal} {0} {spot}.", ("is",), ("was",)),
    ("It {0} a {weather} day.", ("is",), ("was",)),
    ("The {place} {0} very {nice}.", ("is",), ("was",)),
    ("The {animal} {0} to play {game}.", ("wants",), ("wanted",)),
    ("The {animal} {0} {feeling} and {1} away.", ("is", "runs"), ("was", "ran")),
    ("{friend} {0} a {adj} {thing} too.", ("has",), ("had",)),
    ("The sun {0} and the birds {1}.", ("shines", "sing"), ("shone", "sang")),
    ("Everyone {0} the {adj} {thing}.", ("likes",), ("liked",)),
    ("The {thing} {0} {spot} now.", ("is",), ("was",)),
)
NICE = ("nice", "big", "quiet", "busy", "pretty", "green")


@dataclass
class _Cast:
    hero: str
    hero_pos: str  # possessive pronoun: his / her
    hero_subj: str  # he / she
    friend: str
    friend_pos: str
    friend_subj: str
    thing: str
    adj: str
    place: str
    animal: str


def _person(rng: random.Random, avoid: str = "") -> tuple[str, str, str]:
    if rng.random() < 0.5:
        name = rng.choice([n for n in GIRLS if n != avoid])
        return name, "her", "she"
    name = rng.choice([n for n in BOYS if n != avoid])
    return name, "his", "he"


def _cast(rng: random.Random) -> _Cast:
    hero, hero_pos, hero_subj = _person(rng)
    friend, friend_pos, friend_subj = _person(rng, avoid=hero)
    return _Cast(hero, hero_pos, hero_subj, friend, friend_pos, friend_subj,
                 rng.choice(OBJECTS), rng.choice(ADJECTIVES), rng.choice(PLACES),
                 rng.choice(ANIMALS))


def _remark(rng: random.Random, c: _Cast, spoken: bool) -> str:
    """One remark from REMARKS about the story's world: present tense when ``spoken``."""
    template, present, past = rng.choice(REMARKS)
    return template.format(*(present if spoken else past), thing=c.thing, adj=c.adj,
                           animal=c.animal, spot=rng.choice(SPOTS), weather=rng.choice(WEATHER),
                           place=c.place, nice=rng.choice(NICE), game=rng.choice(GAMES),
                           feeling=rng.choice(FEELINGS), friend=c.friend)


def _told(rng: random.Random, c: _Cast, p: float = 0.6) -> list[str]:
    """Zero or one remark in the past tense (narration), with probability ``p``."""
    return [_remark(rng, c, spoken=False)] if rng.random() < p else []


def _say(rng: random.Random, speaker: str, line: str, question: bool = False,
         c: _Cast | None = None) -> str:
    """One line of dialogue with its speech verb, in one of three word orders; with the
    cast ``c``, one or two remarks in the present tense come before the line."""
    if c is not None:
        line = " ".join([_remark(rng, c, spoken=True) for _ in range(rng.randint(1, 2))]
                        + [line])
    verb = "asked" if question else rng.choice(("said", "said", "said", "shouted", "whispered"))
    end = "?" if question else rng.choice((",", "!")) if verb == "shouted" else ","
    form = rng.randrange(3)
    if form == 0:
        return f'"{line}{end}" {verb} {speaker}.'
    if form == 1:
        return f'"{line}{end}" {speaker} {verb}.'
    final = "?" if question else ("!" if end == "!" else ".")
    return f'{speaker} {verb}, "{line}{final}"'


def _opening(rng: random.Random, c: _Cast) -> list[str]:
    kind = "girl" if c.hero_pos == "her" else "boy"
    first = rng.choice((
        f"Once upon a time, there was a little {kind} named {c.hero}.",
        f"One {rng.choice(WEATHER)} day, {c.hero} went to the {c.place}.",
        f"{c.hero} was a {rng.choice(('kind', 'curious', 'happy', 'brave'))} {kind} "
        f"who loved to play.",
    ))
    have = rng.choice((
        f"{c.hero} had a {c.adj} {c.thing}.",
        f"{c.hero_subj.capitalize()} had a {c.adj} {c.thing} that {c.hero_subj} loved very much.",
        f"Every day, {c.hero} played with {c.hero_pos} {c.adj} {c.thing}.",
    ))
    return [first, have, *_told(rng, c)]


def _meeting(rng: random.Random, c: _Cast) -> list[str]:
    lines = [rng.choice((
        f"At the {c.place}, {c.hero} met {c.friend}.",
        f"{c.hero} saw {c.friend} sitting on a bench.",
        f"Then {c.friend} came to play.",
    ))]
    lines.append(_say(rng, c.friend, rng.choice((
        f"Can I play with your {c.thing}", "Do you want to play with me",
        f"Is that your {c.thing}", f"Can we go to the {c.place}")), question=True, c=c))
    lines.append(_say(rng, c.hero, rng.choice((
        "Yes, we can play together", f"Sure, {c.friend}", "Of course",
        f"This is my {c.adj} {c.thing}")), c=c))
    return lines


def _problem(rng: random.Random, c: _Cast) -> list[str]:
    spot = rng.choice(SPOTS)
    kind = rng.randrange(3)
    if kind == 0:
        return [f"Suddenly, the wind took {c.hero_pos} {c.thing}.",
                f"{c.hero} was {rng.choice(('sad', 'scared'))}.",
                _say(rng, c.hero, f"Where is my {c.thing}", question=True, c=c),
                f"{c.friend} looked and looked. {c.friend_subj.capitalize()} found the "
                f"{c.thing} {spot}.",
                _say(rng, c.friend, f"Here is your {c.thing}, {c.hero}", c=c)]
    if kind == 1:
        return [f"A {c.animal} ran to {c.friend} and took {c.friend_pos} "
                f"{rng.choice(OBJECTS)}.",
                f"{c.friend} cried. {c.friend_subj.capitalize()} was very "
                f"{rng.choice(FEELINGS)}.",
                f"{c.hero} ran after the {c.animal}. The {c.animal} stopped {spot}.",
                _say(rng, c.hero, f"Please give it back, little {c.animal}", c=c),
                f"The {c.animal} dropped it and {c.hero} gave it back to {c.friend}.",
                _say(rng, c.friend, f"Thank you, {c.hero}", c=c)]
    return [f"{c.friend} wanted {c.hero_pos} {c.thing} too.",
            f"{c.hero} did not want to share {c.hero_pos} {c.thing}.",
            _say(rng, c.friend, "Why can't we share", question=True, c=c),
            f"{c.hero} thought about it. Then {c.hero_subj} smiled and gave "
            f"{c.friend} {c.hero_pos} {c.thing}.",
            _say(rng, c.hero, f"We can play with my {c.thing} together", c=c)]


def _play(rng: random.Random, c: _Cast) -> list[str]:
    return [rng.choice((
        f"{c.hero} and {c.friend} played {rng.choice(GAMES)} at the {c.place}.",
        f"They jumped and laughed and ran around the {c.place}.",
        f"{c.friend} showed {c.hero} {c.friend_pos} {rng.choice(ADJECTIVES)} "
        f"{rng.choice(OBJECTS)}.",
    )), *_told(rng, c)]


def _ending(rng: random.Random, c: _Cast) -> list[str]:
    return [rng.choice((
        f"{c.hero} and {c.friend} played with their {c.thing} all day.",
        f"From that day on, {c.hero} and {c.friend} were best friends.",
        f"At night, {c.hero} hugged {c.hero_pos} {c.thing} and went to sleep.",
        f"{c.hero} learned that sharing is good.",
    )), rng.choice(("They were very happy.", f"{c.hero} was very {rng.choice(FEELINGS)}.",
                    "It was a good day.", f"{c.friend} smiled at {c.hero}."))]


def demo_story(index: int, seed: int = 0) -> str:
    """Story number ``index`` of the demo corpus with ``seed``: paragraphs joined by newlines."""
    rng = random.Random(f"headprobe-demo-{seed}-{index}")
    c = _cast(rng)
    paragraphs = [_opening(rng, c), _meeting(rng, c)]
    for _ in range(rng.randint(1, 2)):
        paragraphs.append(_problem(rng, c) + (_play(rng, c) if rng.random() < 0.5 else []))
    paragraphs.append(_ending(rng, c))
    return "\n".join(" ".join(p) for p in paragraphs)


def demo_stories(n: int, seed: int = 0) -> list[str]:
    """The first ``n`` demo stories for ``seed`` (a list of ``n`` strings)."""
    return [demo_story(i, seed) for i in range(n)]
