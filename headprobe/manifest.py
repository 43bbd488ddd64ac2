"""Provenance records (manifests) written beside every output."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from headprobe.atomic import atomic_file

TRACKED_LIBRARIES = ("headprobe", "torch", "transformer_lens", "transformers", "tokenizers",
                     "spacy", "datasets", "scikit-learn", "h5py", "numpy", "matplotlib")


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that shape the results."""
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def command_line(argv: list[str] | None = None) -> str:
    """The command as the user typed it, with ``python -m package`` restored."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[0] = "python -m " + Path(argv[0]).parent.name
    return " ".join(argv)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_manifest(stage: str) -> dict[str, Any]:
    """Fields every manifest carries: stage, time, command line, library versions."""
    return {"stage": stage, "created": now_iso(), "command": command_line(),
            "versions": library_versions()}


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def check_manifest(directory: str | Path, remedy: str) -> None:
    """DamagedFile unless ``directory/manifest.json``, when present, is a JSON object; a
    reader of a results directory calls it so that a broken one is not passed over.
    remedy: what to do ("fit the probes again")."""
    from headprobe.failures import DamagedFile, first_line

    path = Path(directory) / "manifest.json"
    if not path.is_file():
        return
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeError) as exc:
        raise DamagedFile(f"{path} is not valid JSON ({first_line(exc)}); the file is "
                          f"damaged, {remedy}") from exc
    if not isinstance(manifest, dict):
        raise DamagedFile(f"{path} is not a JSON object; the file is damaged, {remedy}")
