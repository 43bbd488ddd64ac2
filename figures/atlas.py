"""The head atlas: one offline HTML page per run showing what each head does.

The page (``RUN/figures/atlas.html``) holds a layers x heads grid coloured by a metric
chosen from whatever the run's results hold, a card per head and a search ("which heads
...": a tag's best cells as ``probing top`` ranks them, or the heads ranked by a study's
number). Its data come from :mod:`figures.atlas_data` and are embedded as JSON in the
page (``atlas_template.html``, plain JavaScript): no network reference, it opens from
``file://``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from figures.atlas_data import atlas_payload
from figures.sources import Source
from headprobe.atomic import atomic_file

NAME = "atlas"
PAGE = "atlas.html"
TEMPLATE = Path(__file__).with_name("atlas_template.html")


def render_atlas(payload: dict[str, Any]) -> str:
    """The complete HTML page (inline CSS, JS and data) as a string."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    # A token could contain "</script>"; escaping "</" keeps the JSON inside its tag.
    text = text.replace("</", "<\\/")
    page = TEMPLATE.read_text()
    return page.replace("{{TITLE}}", html.escape(payload["title"])).replace("{{DATA}}", text)


def atlas_path(out: str | Path) -> Path:
    """The page's path: ``out`` itself when it names an .html file, else ``out/atlas.html``."""
    out = Path(out)
    return out if out.suffix == ".html" else out / PAGE


def write_atlas(sources: Sequence[Source], out: str | Path, title: str,
                trace: dict[str, Any] | None = None) -> Path:
    """Build the atlas of ``sources`` and write it atomically; return its path.

    trace: every head's activity on one story (:func:`figures.atlas_data.store_trace`).
    """
    page = atlas_path(out)
    text = render_atlas(atlas_payload(sources, title, trace))
    page.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(page) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return page
