"""Case studies. Each is a ``python -m probing <name>`` subcommand.

A study module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; it writes its numbers with :mod:`probing.study_io`.
"""

STUDY_MODULES: dict[str, str] = {
    "quote": "probing.studies.quote",
    "tag-induction": "probing.studies.tag_induction",
    "repeated": "probing.studies.repeated",
    "patch": "probing.studies.patching",
    "ablate": "probing.studies.ablation",
    "stats": "probing.studies.stats",
    "next-token": "probing.studies.next_token",
    "time-order": "probing.studies.time_order",
}
