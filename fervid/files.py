"""Files at the edges of fervid: inputs opened safely and outputs written atomically.

Inputs: only regular files are opened (a FIFO blocks ``open()`` until a writer comes,
``/dev/zero`` never ends), and readers learn the size and the first bytes before reading
the rest, so a 2 GB file of zeros named ``.jpg`` costs a ``stat`` and 64 KB, not 2 GB.

Outputs: written to a temporary file beside the target and renamed only when complete,
so a kill or a full disk never leaves a torn file under the final name; what goes wrong
(a file where a folder must be, no space, no permission) is one line naming the path.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import BadInputError, FervidError, OutputError

# mkstemp creates 0600 files; outputs should get the mode a plain open() would give them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

#: Bytes a reader sees before deciding whether to read the rest (headers of every format we read fit).
HEAD_BYTES = 64 * 1024
#: Free space under which a failed write is blamed on a full disk (libraries that lose errno:
#: torch.save raises RuntimeError, OpenCV's VideoWriter fails silently).
_NEARLY_FULL = 256 * 1024
_SPECIAL = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


# --- inputs ---------------------------------------------------------------------------------------

def special_kind(mode: int) -> str | None:
    """'a FIFO (named pipe)', 'a character device', ... for a non-regular, non-folder mode; else None."""
    return _SPECIAL.get(stat.S_IFMT(mode))


def _open_problem(p: Path, e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symbolic link loop (the link points, in the end, to itself)"
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return "broken symbolic link (its target does not exist)" if os.path.islink(p) else "no such file"
    return f"cannot read ({e.strerror or e})"


def stat_input(path: str | os.PathLike, what: str = "a file") -> os.stat_result:
    """The stat of ``path`` if it is a regular file (links followed), else a one-line BadInputError.

    ``stat`` never blocks, unlike ``open`` on a FIFO, so this is the check to make before any
    reader touches a path a user gave.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise BadInputError(f"{p}: {_open_problem(p, e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadInputError(f"{p}: is a folder, not {what}")
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise BadInputError(f"{p}: is {kind}, not a regular file (fervid reads regular files only)")
    return st


@contextlib.contextmanager
def open_input(path: str | os.PathLike, what: str = "a file") -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """A regular file opened for reading, with its stat; refused in one line otherwise.

    Opened with O_NONBLOCK and checked again with ``fstat``: a FIFO swapped in after the
    ``stat`` (a race) is then refused instead of blocking the open.
    """
    p = Path(path)
    stat_input(p, what)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BadInputError(f"{p}: {_open_problem(p, e)}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadInputError(f"{p}: is {special_kind(st.st_mode) or 'not a regular file'}, not {what}")
    with os.fdopen(fd, "rb") as fh:
        yield fh, st


def mb(n_bytes: float) -> str:
    """Megabytes for messages: '2.5 MB', '2,147 MB' (never '2.15e+03 MB')."""
    v = n_bytes / 1e6
    return f"{v:,.0f} MB" if v >= 100 else f"{v:.3g} MB"


def read_input(path: str | os.PathLike, limit: int, what: str = "a file", flag: str = "",
               check_head: Callable[[bytes], str | None] | None = None) -> bytes:
    """The bytes of a regular file no larger than ``limit``, refused in one line otherwise.

    The size (from ``fstat``) and the first ``HEAD_BYTES`` (``check_head`` returns the
    problem, or None) are checked before the rest is read, and the read itself stops at
    ``limit``, so a file that grows while it is read cannot exhaust memory either.
    """
    p = Path(path)
    hint = f" (raise it with {flag})" if flag else ""
    with open_input(p, what) as (fh, st):
        if st.st_size > limit:
            raise BadInputError(f"{p}: file is {mb(st.st_size)}; fervid reads up to {mb(limit)}{hint}")
        try:
            head = fh.read(min(HEAD_BYTES, limit + 1))
            problem = check_head(head) if check_head is not None and head else None
            if problem:
                raise BadInputError(f"{p}: {problem}")
            data = head + fh.read(limit + 1 - len(head))
        except OSError as e:
            raise BadInputError(f"{p}: cannot read ({e.strerror or e})") from None
    if len(data) > limit:
        raise BadInputError(f"{p}: file grew past {mb(limit)} while it was read{hint}")
    return data


# --- outputs --------------------------------------------------------------------------------------

def output_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be created, judged from the disk (a file where a folder must be), or None."""
    p = Path(os.path.abspath(path))
    for parent in p.parents:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue  # created on the way
        except OSError as e:
            if e.errno == errno.ENOTDIR:
                continue  # a file further up: found on the next step
            if e.errno == errno.ELOOP:
                return f"{parent} is a symbolic link loop"
            return f"{parent}: {e.strerror or e}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{parent} is a file, not a folder"
        return None
    return None


def check_output(path: str | os.PathLike, folder: bool = False) -> None:
    """Refuse, in one line, an output path that cannot be written, before any work is done."""
    problem = output_problem(Path(path) / "x" if folder else path)
    if problem is None and folder and Path(path).exists() and not Path(path).is_dir():
        problem = "exists and is not a folder"
    if problem is None and not folder and Path(path).is_dir():
        problem = "is a folder"
    if problem:
        raise OutputError(f"{path}: cannot write here: {problem}")


def nearly_full(folder: str | os.PathLike) -> bool:
    """Whether the filesystem holding ``folder`` has (next to) no space left for us."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL


_WRITE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EFBIG: "file too large for this filesystem or limit", errno.EROFS: "read-only filesystem",
                 errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EIO: "I/O error"}


def write_problem(e: BaseException, path: str | os.PathLike) -> str | None:
    """What went wrong writing ``path`` in words, when ``e`` is the filesystem's fault; None for a bug."""
    if isinstance(e, FervidError):
        return None
    if isinstance(e, OSError) and e.errno in (errno.ENOTDIR, errno.EEXIST, errno.ELOOP):
        return output_problem(path) or (e.strerror or str(e))
    if isinstance(e, OSError) and e.errno in _WRITE_ERRORS:
        return _WRITE_ERRORS[e.errno]
    if isinstance(e, Exception) and nearly_full(Path(os.path.abspath(path)).parent):
        return "no space left on device"
    return None


@contextlib.contextmanager
def output_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a filesystem failure while writing ``path`` (or under it) into one OutputError line."""
    try:
        yield
    except Exception as e:
        problem = write_problem(e, Path(path) / "x")
        if problem is None:
            raise
        raise OutputError(f"{path}: cannot write: {problem}") from None


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
    A full disk, a file where a folder must be or a missing permission, in the writer or
    here, is an :class:`OutputError` naming ``path``, and the temporary file is removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BadInputError(f"{path}: already exists (use --overwrite to replace it)")
    check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {write_problem(e, path) or e.strerror or e}") from None
    tmp_path = Path(tmp)
    try:
        with output_errors_of(path, tmp_path):
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


@contextlib.contextmanager
def output_errors_of(path: Path, tmp: Path) -> Iterator[None]:
    """:func:`output_errors` for one file: an OSError about another file (an input the writer
    read) keeps its own meaning, unless it is one no reader raises (no space, read-only)."""
    try:
        yield
    except Exception as e:
        name = getattr(e, "filename", None)
        own = name is None or Path(os.fsdecode(name)) in (tmp, path)
        space = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
        problem = write_problem(e, path) if (own or space) else None
        if problem is None:
            raise
        raise OutputError(f"{path}: cannot write: {problem}") from None


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
