"""Private files in the data directory: created once, atomically, readable by the owner only.

Used for the token signing secret, the per-install serial number and the initial admin
password. :func:`create_once` writes a temporary file (mode 0600 from the start, never
world-readable), fsyncs it and *links* it into place: if two processes start together,
exactly one file wins and both read the winner's content. :func:`make_private` restricts
the data directory tree to its owner (0700).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile

from dios.atomic import fsync_directory

log = logging.getLogger("dios.store")

__all__ = ["create_once", "make_private", "read_private"]

#: Mode of the data directory and the directories the services create in it.
PRIVATE_DIR = 0o700
#: Mode of the files holding patient data (database, images, previews).
PRIVATE_FILE = 0o600


def make_private(root: str | os.PathLike[str], subdirs: tuple[str, ...] = ()) -> None:
    """Restrict ``root`` and its ``subdirs`` (created when missing) to their owner (0700).

    Patient data (the database, images, previews) lives below the data directory; a
    directory nobody else may enter keeps it private whatever the files' own modes.
    """
    base = os.fspath(root)
    for sub in ("", *subdirs):
        d = os.path.join(base, sub) if sub else base
        os.makedirs(d, mode=PRIVATE_DIR, exist_ok=True)
        if stat.S_IMODE(os.stat(d).st_mode) != PRIVATE_DIR:
            os.chmod(d, PRIVATE_DIR)


def read_private(path: str | os.PathLike[str]) -> bytes:
    """Read a private file, tightening its mode to 0600 (with a warning) when it is looser."""
    p = os.fspath(path)
    mode = stat.S_IMODE(os.stat(p).st_mode)
    if mode & 0o077:
        log.warning("%s had mode %o; restricting it to 0600", p, mode)
        os.chmod(p, 0o600)
    with open(p, "rb") as fh:
        return fh.read()


def create_once(path: str | os.PathLike[str], data: bytes) -> tuple[bytes, bool]:
    """Create ``path`` with ``data`` (mode 0600) unless it exists.

    Returns
    -------
    (bytes, bool)
        The file's content (``data`` or what was already there) and whether this call
        created it.
    """
    p = os.fspath(path)
    if os.path.exists(p):
        return read_private(p), False
    directory = os.path.dirname(os.path.abspath(p))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(p) + ".", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, p)
            created = True
        except FileExistsError:
            created = False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_directory(directory)
    if not created:
        return read_private(p), False
    return data, True
