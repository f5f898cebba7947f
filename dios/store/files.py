"""Private files in the data directory: created once, atomically, readable by the owner only.

Used for the token signing secret, the per-install serial number and the initial admin
password. :func:`create_once` writes a temporary file (mode 0600 from the start, never
world-readable), fsyncs it and *links* it into place: if two processes start together,
exactly one file wins and both read the winner's content.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile

from dios.atomic import fsync_directory

log = logging.getLogger("dios.store")

__all__ = ["create_once", "read_private"]


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
