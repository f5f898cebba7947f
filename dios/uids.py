"""DICOM UIDs under a configurable organisation root, and AE titles.

A UID (PS3.5 section 9) is at most 64 characters of digits and dots; every dot-separated
component is a decimal number without leading zeros (a lone ``0`` is allowed). A site
configures the root its organisation registered (for example ``1.2.826.0.1.3680043.10.999``);
without one, the UUID-derived root ``2.25`` (PS3.5 B.2) needs no registration at all.

Generated UIDs are ``<root>.<kind>.<random>`` where ``kind`` is 1 for studies, 2 for
series and 3 for SOP instances, and ``random`` is a decimal number drawn from the operating
system's random source, as long as the 64-character limit allows (at least 20 digits,
about 66 bits; 39 digits, 128 bits, when the root is short). Under ``2.25`` the UID is
``2.25.<uuid4 as an integer>`` exactly as PS3.5 B.2 prescribes.

An AE title (PS3.5 section 6.2, VR AE) is 1-16 characters of the default repertoire
without backslash or control characters, not only spaces: :func:`ae_title_problem`.

Imports: the standard library only.
"""

from __future__ import annotations

import re
import secrets
import threading
import uuid

__all__ = ["DEFAULT_UID_ROOT", "MAX_ROOT_LENGTH", "UidFactory", "is_valid_uid", "uid_problem"]

#: The root used when a site has none: UUID-derived UIDs (PS3.5 B.2), no registration needed.
DEFAULT_UID_ROOT = "2.25"

_MAX_UID = 64
_MIN_RANDOM_DIGITS = 20
_MAX_RANDOM_DIGITS = 39  # 10**39 > 2**128
_KINDS = {"study": 1, "series": 2, "instance": 3}
#: The longest root that still leaves room for ``.<kind>.`` and 20 random digits.
MAX_ROOT_LENGTH = _MAX_UID - 3 - _MIN_RANDOM_DIGITS

_COMPONENT = re.compile(r"0|[1-9][0-9]*")


def uid_problem(uid: object) -> str | None:
    """Say what is wrong with ``uid`` as a DICOM UID, or ``None`` when it is valid.

    Parameters
    ----------
    uid : object
        The candidate value.

    Returns
    -------
    str or None
        A one-line reason, e.g. ``"component '01' has a leading zero"``.
    """
    if not isinstance(uid, str):
        return f"must be a string, not {type(uid).__name__}"
    if not uid:
        return "is empty"
    if len(uid) > _MAX_UID:
        return f"is {len(uid)} characters long; the maximum is {_MAX_UID}"
    for part in uid.split("."):
        if part == "":
            return "has an empty component (leading, trailing or double dot)"
        if not part.isascii() or not part.isdigit():
            return f"component {part!r} is not made of the digits 0-9"
        if not _COMPONENT.fullmatch(part):
            return f"component {part!r} has a leading zero"
    return None


def is_valid_uid(uid: object) -> bool:
    """Return True when ``uid`` is a syntactically valid DICOM UID (PS3.5 section 9).

    Parameters
    ----------
    uid : object
        The candidate value; anything that is not a ``str`` is invalid.

    Returns
    -------
    bool
    """
    return uid_problem(uid) is None


class UidFactory:
    """Makes unique study, series and instance UIDs under one organisation root.

    Parameters
    ----------
    root : str
        The organisation root, e.g. ``"1.2.826.0.1.3680043.10.999"`` or ``"2.25"``. It must be
        a valid UID of at most :data:`MAX_ROOT_LENGTH` characters (a trailing dot is
        tolerated and dropped).

    Raises
    ------
    TypeError
        When ``root`` is not a string.
    ValueError
        When ``root`` is not a valid UID or is too long to leave room for a unique suffix.

    Examples
    --------
    >>> f = UidFactory("1.2.3")
    >>> f.study().startswith("1.2.3.1.")
    True
    """

    def __init__(self, root: str = DEFAULT_UID_ROOT) -> None:
        if not isinstance(root, str):
            raise TypeError(f"UID root must be a string, not {type(root).__name__}")
        cleaned = root.strip()
        if cleaned.endswith("."):
            cleaned = cleaned[:-1]
        problem = uid_problem(cleaned)
        if problem is not None:
            raise ValueError(f"UID root {root!r} {problem}")
        if len(cleaned) > MAX_ROOT_LENGTH:
            raise ValueError(
                f"UID root {root!r} is {len(cleaned)} characters long; at most {MAX_ROOT_LENGTH} "
                f"leave room for {_MIN_RANDOM_DIGITS} unique digits within {_MAX_UID}")
        self._root = cleaned
        self._uuid_arc = cleaned == "2.25"
        self._digits = min(_MAX_RANDOM_DIGITS, _MAX_UID - len(cleaned) - 3)
        self._lock = threading.Lock()
        self._issued: set[str] = set()

    @property
    def root(self) -> str:
        """The organisation root (without a trailing dot)."""
        return self._root

    def __repr__(self) -> str:
        return f"UidFactory({self._root!r})"

    def _random_number(self) -> str:
        # A number of exactly ``self._digits`` digits has no leading zero.
        low = 10 ** (self._digits - 1)
        return str(low + secrets.randbelow(9 * low))

    def new(self, kind: str = "instance") -> str:
        """Return a new UID of ``kind`` (``study``, ``series`` or ``instance``).

        Parameters
        ----------
        kind : str
            Which kind of object the UID names; selects the ``.<kind>.`` arc.

        Returns
        -------
        str
            A valid UID, unique within this process and, with overwhelming probability,
            everywhere.

        Raises
        ------
        ValueError
            For an unknown ``kind``.
        """
        if kind not in _KINDS:
            raise ValueError(f"UID kind must be one of {sorted(_KINDS)}, not {kind!r}")
        while True:
            if self._uuid_arc:
                uid = f"2.25.{uuid.uuid4().int}"
            else:
                uid = f"{self._root}.{_KINDS[kind]}.{self._random_number()}"
            with self._lock:
                # Belt and braces: the random space makes a repeat practically impossible,
                # but a repeat within one process is excluded outright. The set is bounded.
                if uid in self._issued:
                    continue
                if len(self._issued) >= 100_000:
                    self._issued.clear()
                self._issued.add(uid)
            return uid

    def study(self) -> str:
        """Return a new Study Instance UID."""
        return self.new("study")

    def series(self) -> str:
        """Return a new Series Instance UID."""
        return self.new("series")

    def instance(self) -> str:
        """Return a new SOP Instance UID."""
        return self.new("instance")


_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")


def ae_title_problem(value: object) -> str | None:
    """Say what is wrong with ``value`` as an AE title, or ``None`` when it is valid.

    >>> ae_title_problem("ORTHANC") is None
    True
    >>> ae_title_problem("A\\B")
    '1 to 16 characters of the DICOM default character set, no backslash'
    """
    if not isinstance(value, str) or not value.strip():
        return "an AE title of 1 to 16 characters, not blank"
    if not _AE_TITLE.fullmatch(value):
        return "1 to 16 characters of the DICOM default character set, no backslash"
    return None
