"""Small HDF5 outputs built in memory and written to disk in one plain write.

When HDF5 meets a full disk while it writes or closes a file, the file stays half-closed
inside the library, which then crashes when the process exits (``probing fit`` on a full
disk ended in a segmentation fault this way). Results files are small, so they are built
in memory instead and written with an ordinary ``write``, which fails with an ordinary
``OSError`` — after :func:`headprobe.space.require_free_space` has checked that they fit.
Large streamed files (activation stores) check free space before every block instead.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from headprobe.failures import naming
from headprobe.space import require_free_space


@contextmanager
def hdf5_image(path: str | Path, shown: str | Path | None = None) -> Iterator[Any]:
    """An ``h5py.File`` open for writing in memory; saved to ``path`` when the block ends.

    shown: the name the file is known by in the end, for messages (``path`` may be temporary).
    """
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        yield file
    data = buffer.getbuffer()
    require_free_space(path, len(data), shown=shown)
    with naming(shown or path), open(path, "wb") as handle:
        handle.write(data)
