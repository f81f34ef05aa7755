"""Atomic file writes, so that a kill never leaves a half-written file in place of a good one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import BadInputError

# mkstemp creates 0600 files; outputs should get the mode a plain open() would give them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    The temporary file lives in the same directory so ``os.replace`` is atomic: a process
    killed at any moment leaves either the old file or the new one, plus at worst a hidden
    ``.NAME.XXXX.tmp.EXT`` beside it. Its suffix matches the target, because some writers
    (OpenCV, matplotlib) pick the format from the extension. With ``overwrite=False`` the
    new file is published with ``link``, which fails if the name appeared meanwhile (another
    process writing the same output), instead of replacing it. ``durable``: fsync before the
    rename, so a power cut cannot leave an empty file under the name (checkpoints).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BadInputError(f"{path}: already exists (use --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # After the writer: some (safetensors) replace the file and give it 0600 again.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        if durable:
            _fsync(tmp_path)
        if overwrite:
            os.replace(tmp_path, path)
        else:
            _publish_new(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless something took that name since the check."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise BadInputError(f"{path}: already exists (use --overwrite to replace it)") from None
    except OSError:  # a filesystem without hard links: the check-then-rename window remains
        if path.exists():
            raise BadInputError(f"{path}: already exists (use --overwrite to replace it)") from None
        os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
