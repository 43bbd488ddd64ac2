"""Third-party chatter a headprobe command does not show.

transformers reports, at import, that it cannot check the publisher of its optional
``kernels-community/*`` attention kernels offline (the ``kernels`` package's logger), and
draws a progress bar for writing a model of one shard; neither says anything about the
command's own work, which reports its progress itself.
"""

from __future__ import annotations

import logging
import os

# loggers whose warnings are about the libraries, not about the user's command
QUIET_LOGGERS = ("transformers", "kernels")


def quiet_third_party() -> None:
    """Raise QUIET_LOGGERS to ERROR and turn off the Hugging Face libraries' own progress
    bars (when nothing asked otherwise: ``HF_HUB_DISABLE_PROGRESS_BARS`` set by the user
    wins). Call before those libraries are imported; repeat calls are harmless."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
