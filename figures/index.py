"""``FIGDIR/index.html``: every figure of a figures directory as a thumbnail, with one line
on what it shows and one on how to read it.

The page is written from the figures' sidecars (``STEM.json``, :mod:`figures.writer`), so
it lists every figure in the directory, whichever command drew it; what a figure shows and
how to read it come from its type in :mod:`figures.registry` (``help`` and ``READING``).
Thumbnails are the figures' own PNG or SVG files, linked by relative paths: the page works
offline and moves with the directory.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from figures.registry import READING, type_of
from figures.writer import SIDECAR_FORMAT
from headprobe.atomic import atomic_file
from headprobe.manifest import read_json

INDEX_FILE = "index.html"
THUMBNAIL_FORMATS = ("png", "svg")      # what an <img> shows; pdf is only linked
PAGES = {"viewer.html": "attention viewer: where every head attends on one story "
                        "(hover a token)",
         "atlas.html": "head atlas: every head's numbers, a card per head, which heads "
                       "carry a tag (click a head)"}


@dataclass
class Entry:
    """One figure of the directory: its stem, figure name, files and the two lines."""

    stem: str
    name: str
    files: list[str]
    shows: str
    reading: str

    @property
    def thumbnail(self) -> str | None:
        return next((f for fmt in THUMBNAIL_FORMATS for f in self.files
                     if f.endswith(f".{fmt}")), None)


def index_entries(fig_dir: str | Path) -> list[Entry]:
    """The figures in ``fig_dir`` (those with a sidecar and at least one file), by name."""
    entries = []
    for sidecar in sorted(Path(fig_dir).glob("*.json")):
        try:
            meta = read_json(sidecar)
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
            continue
        files = [f for f in meta.get("files", []) if (sidecar.parent / f).is_file()]
        name = str(meta.get("params", {}).get("name", meta.get("figure", sidecar.stem)))
        if not files:
            continue
        try:
            ftype = type_of(name)
            shows, reading = ftype.help, READING.get(ftype.name, "")
        except KeyError:
            shows, reading = "", ""
        entries.append(Entry(sidecar.stem, name, files, shows, reading))
    return sorted(entries, key=lambda e: (e.name.partition(":")[0], e.stem))


def _card(entry: Entry) -> str:
    e = html.escape
    thumb = (f'<a href="{e(entry.thumbnail)}"><img src="{e(entry.thumbnail)}" '
             f'alt="{e(entry.name)}" loading="lazy"></a>' if entry.thumbnail
             else '<p class="none">no thumbnail (draw with --format png)</p>')
    links = " ".join(f'<a href="{e(f)}">{e(Path(f).suffix[1:])}</a>' for f in entry.files)
    return (f'<figure id="{e(entry.stem)}">{thumb}<figcaption><b>{e(entry.name)}</b> '
            f'<span class="files">{links}</span><br>{e(entry.shows)}'
            f'<br><i>How to read it:</i> {e(entry.reading)}</figcaption></figure>')


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1.2em}
figure{margin:0;border:1px solid #ddd;padding:.6em;border-radius:4px}
img{width:100%;height:200px;object-fit:contain;background:#fafafa}
figcaption{font-size:.85em;line-height:1.35}.files a{margin-left:.4em}.none{color:#888}"""


def index_html(fig_dir: str | Path, title: str) -> str:
    """The page for ``fig_dir`` (see the module docstring)."""
    entries = index_entries(fig_dir)
    pages = [f'<li><a href="{p}">{p}</a>: {html.escape(what)}</li>'
             for p, what in PAGES.items() if (Path(fig_dir) / p).is_file()]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(entries)} figures, drawn from stored results by <code>python -m figures"
        "</code>; click a thumbnail for the full picture. Each figure's JSON sidecar names "
        "the files and the command it was drawn from.</p>",
        f"<ul>{''.join(pages)}</ul>" if pages else "",
        "<main>", *(_card(entry) for entry in entries), "</main>", "</body></html>", ""])


def write_index(fig_dir: str | Path, title: str | None = None) -> Path:
    """Write ``fig_dir/index.html`` (atomically; left alone when it would not change, like
    the figures that are up to date); its path."""
    fig_dir = Path(fig_dir)
    path = fig_dir / INDEX_FILE
    text = index_html(fig_dir, title or f"Figures of {fig_dir.resolve().parent.name}")
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
