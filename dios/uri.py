"""Device URIs: ``DIOS/DEVICE/<Name>`` addressing on the bus.

A URI has three ``/``-separated parts: the ``DIOS`` root, the ``DEVICE`` class and a
device name made of letters, digits and ``_`` starting with a letter (``Generator``,
``Detector``, ``Collimator``, ``Stand``, ``Table`` ...). Matching is exact and
case-sensitive, as on the reference console. Subscription patterns may use shell
wildcards (``DIOS/DEVICE/*``).
"""

from __future__ import annotations

import fnmatch
import re

from dios.codes import BAD_URI, DiosError

ROOT = "DIOS"
DEVICE_CLASS = "DEVICE"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

GENERATOR = "DIOS/DEVICE/Generator"
DETECTOR = "DIOS/DEVICE/Detector"
COLLIMATOR = "DIOS/DEVICE/Collimator"
STAND = "DIOS/DEVICE/Stand"
TABLE = "DIOS/DEVICE/Table"


def parse(uri: object) -> str:
    """Validate ``uri`` and return the device name; raise ``DiosError(BAD_URI)`` if malformed.

    >>> parse("DIOS/DEVICE/Generator")
    'Generator'
    """
    if not isinstance(uri, str):
        raise DiosError(BAD_URI, "a device URI is a string such as DIOS/DEVICE/Generator")
    parts = uri.split("/")
    if len(parts) != 3 or parts[0] != ROOT or parts[1] != DEVICE_CLASS or not _NAME.match(parts[2]):
        raise DiosError(BAD_URI, repr(uri)[:80])
    return parts[2]


def device_uri(name: str) -> str:
    """Build the URI of device ``name`` (validated)."""
    uri = f"{ROOT}/{DEVICE_CLASS}/{name}"
    parse(uri)
    return uri


def matches(pattern: str, uri: str) -> bool:
    """True when ``uri`` matches the subscription ``pattern`` (shell wildcards, case-sensitive)."""
    return fnmatch.fnmatchcase(uri, pattern)
