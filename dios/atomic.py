"""Atomic file writes: a reader sees either the old file or the complete new one, never a part.

Every file the engine writes (DICOM images, previews, configuration, keys) goes through
this module. The recipe is the POSIX one: write a temporary file in the destination's own
directory (so the final rename never crosses a file system), flush and ``fsync`` it, rename
it over the destination, then ``fsync`` the directory so the rename itself survives a
power cut. On any error the temporary file is removed and the destination is untouched.

Imports: the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_with", "fsync_directory"]

_TMP_PREFIX = ".tmp-"


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry (a rename or a new file in it) to stable storage.

    Parameters
    ----------
    directory : str or os.PathLike
        The directory whose entries must be made durable.
    """
    fd = os.open(os.fspath(directory), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Open a binary file for writing that appears at ``path`` only when complete.

    Parameters
    ----------
    path : str or os.PathLike
        Destination. Its directory must exist. An existing file is replaced atomically.
    mode : int
        Permission bits of the new file, set with ``chmod`` (the umask does not apply);
        owner-only by default, since most files the engine writes hold patient data.

    Yields
    ------
    BinaryIO
        A writable binary file object (the temporary file).

    Raises
    ------
    FileNotFoundError
        When the destination directory does not exist.
    IsADirectoryError
        When ``path`` names an existing directory.

    Notes
    -----
    When the ``with`` body raises, the temporary file is deleted, the destination is left
    as it was, and the exception propagates.
    """
    dest = os.fspath(path)
    if os.path.isdir(dest):
        raise IsADirectoryError(f"cannot write file over directory {dest!r}")
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory!r} for {dest!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + os.path.basename(dest) + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview,
                       *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    data : bytes-like
        The complete new content.
    mode : int
        Permission bits of the new file.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
    with atomic_open(path, mode=mode) as fh:
        fh.write(data)


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[BinaryIO], object],
                      *, mode: int = 0o600) -> None:
    """Let ``writer(fileobj)`` produce the content of ``path``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    writer : callable
        Called once with the open temporary file; if it raises, nothing is written.
    mode : int
        Permission bits of the new file.
    """
    with atomic_open(path, mode=mode) as fh:
        writer(fh)
