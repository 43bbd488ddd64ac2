"""Case studies. Each is a ``python -m probing <name>`` subcommand.

A study module exposes ``HELP`` (one line), ``STUDY`` (its name, a key below),
``LAYOUT`` (the arrays it writes: a :class:`probing.study_io.Layout`),
``add_arguments(parser)`` and ``run(args) -> int``; it writes its numbers with
:func:`probing.study_io.write_study`.
"""

STUDY_MODULES: dict[str, str] = {
    "quote": "probing.studies.quote",
    "tag-induction": "probing.studies.tag_induction",
    "repeated": "probing.studies.repeated",
    "repeated-k-of-n": "probing.studies.repeated_kofn",
    "patch": "probing.studies.patching",
    "ablate": "probing.studies.ablation",
    "stats": "probing.studies.stats",
    "next-token": "probing.studies.next_token",
    "time-order": "probing.studies.time_order",
}
