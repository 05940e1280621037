"""Atomic file replacement, used wherever a reader may look at a file while it is rewritten
(history, summary page, HTML outputs, cursors, alert state, config files).

The data goes to a temporary file in the target's folder, is flushed and fsync'ed, gets its
final permissions, then ``os.replace`` swaps it in: a reader sees the old file or the new
one, never a partial one, and a crash leaves at most a stray ``.<name>.*.tmp`` file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DEFAULT_MODE = 0o644
"""Outputs are read by other users (nginx, Jupyter); secrets pass mode=0o600."""


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace(target: Path, fill: Callable[[str], object], mode: int) -> None:
    """``fill`` a temporary file beside ``target``, give it ``mode``, rename it over ``target``;
    on any error the temporary file is removed and the error raised."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fill(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = DEFAULT_MODE,
                       durable: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically. ``durable`` also fsyncs the folder, so the
    rename itself survives a power cut (history, cursors); pass False for cheap rewrites."""

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    target = Path(path)
    _replace(target, fill, mode)
    if durable:
        _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = DEFAULT_MODE,
                      durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode, durable=durable)


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                mode: int = DEFAULT_MODE) -> Path:
    """Copy ``src`` over ``dst`` atomically (readers never see a half-copied ``dst``)."""
    target = Path(dst)
    _replace(target, lambda tmp: shutil.copyfile(src, tmp), mode)
    return target
