"""Resolve a Hugging Face Hub name or a local path, failing fast when offline.

A hub lookup on a machine without network only fails after long retries, so
before handing a hub name to a library we check the local cache and whether the
hub answers at all, and otherwise stop with a message that asks for a local path.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from headprobe.errors import UsageError
from headprobe.rundir import missing_input, run_of

_PATH_PREFIXES = (".", "/", "~")


def looks_like_path(name: str) -> bool:
    """True for strings that can only mean a local file or directory."""
    return name.startswith(_PATH_PREFIXES) or name.count("/") > 1 or "\\" in name


def hub_offline() -> bool:
    """True when the environment asks the Hugging Face libraries to stay offline."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection within ``timeout`` seconds."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", port), timeout):
            return True
    except OSError:
        return False


def _cached_snapshot(name: str, repo_type: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, repo_type=repo_type, local_files_only=True)
    except Exception:  # not cached, or an unusable cache entry
        return None


def resolve_pretrained(name: str, what: str, repo_type: str = "model",
                       example: str = "../shared/models/tinystories-8L") -> str:
    """Return a local directory/file for ``name`` or a hub name known to be fetchable.

    Raises UsageError at once when ``name`` is a missing path, a model directory without a
    model (no config.json), or a hub name that is neither cached nor reachable.
    """
    path = Path(name).expanduser()
    if path.exists():
        if what == "model" and path.is_dir() and not (path / "config.json").is_file():
            raise UsageError(f"{what} directory {name} holds no model: no config.json in it; "
                             f"give a model directory or a hub name (e.g. {example})")
        return str(path)
    if looks_like_path(name):
        if what == "model":
            raise missing_input("model", name, run_of(name, "model"))
        raise UsageError(f"{what} {name!r} does not exist")
    cached = _cached_snapshot(name, repo_type)
    if cached:
        return cached
    if hub_offline() or not hub_reachable():
        raise UsageError(
            f"{what} {name!r} is not a local path and the Hugging Face Hub cannot be reached; "
            f"pass a local directory instead (e.g. {example})")
    return name
