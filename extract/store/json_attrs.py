"""HDF5 attributes that hold JSON: dicts, lists and None stored as text.

Scalars (text, numbers; booleans as 0/1) are stored as they are. Every other value is
stored as JSON text, and its name is listed in the attribute ``json_attributes`` (itself
a JSON list), so a plain HDF5 reader knows which attributes to decode.
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

JSON_NAMES = "json_attributes"


def encode_attrs(target: h5py.AttributeManager, attrs: dict[str, Any]) -> None:
    """Write ``attrs`` into ``target``: scalars as they are, anything else as JSON text."""
    json_names = set(json.loads(target.get(JSON_NAMES, "[]")))
    for key, value in attrs.items():
        if isinstance(value, (bool, np.bool_)):
            target[key] = int(value)
        elif isinstance(value, (str, int, float, np.integer, np.floating)):
            target[key] = value
            json_names.discard(key)
        else:
            target[key] = json.dumps(value, default=str)
            json_names.add(key)
    target[JSON_NAMES] = json.dumps(sorted(json_names))


def decode_attrs(source: h5py.AttributeManager) -> dict[str, Any]:
    """Every attribute of ``source`` as Python values, JSON text decoded."""
    json_names = set(json.loads(source.get(JSON_NAMES, "[]")))
    out: dict[str, Any] = {}
    for key, value in source.items():
        if key == JSON_NAMES:
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = json.loads(value) if key in json_names else value
    return out
