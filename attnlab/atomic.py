"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every result, index entry, checkpoint side file and export goes through these (the data
cache swaps whole directories, :mod:`attnlab.data.pipeline`; compiled programs use
:mod:`attnlab.compile_cache`). A write killed half way leaves only a dot-named temp file
(``.<name>.<random>``) that no reader globs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# read once: os.umask can only be read by setting it, which is process-wide (threads)
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write, *, binary: bool, suffix: str = "") -> str:
    """Write ``path`` through ``write(file)`` on a temp file in the same directory, then
    ``os.replace``: readers see the old file or the whole new one, never a part. The
    file gets the permissions a plain ``open(path, "w")`` would give (``mkstemp`` makes
    0600 files; results in a shared folder must stay readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.stem if suffix else path.name
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return str(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same dir + ``os.replace``."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Copy ``src`` to ``dst`` atomically (same guarantees as :func:`atomic_write_text`)."""
    with open(src, "rb") as fin:
        return atomic_write(dst, lambda f: shutil.copyfileobj(fin, f), binary=True,
                             suffix=Path(dst).suffix)


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> str:
    """``np.savez_compressed`` to a temp file in the same directory, then ``os.replace``."""
    import numpy as np

    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True,
                         suffix=".npz")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data), binary=True, suffix=Path(path).suffix)
