"""The backend registry: a device URL's scheme names the module that builds its backend.

A URL is ``scheme://rest?key=value&...``; each scheme is registered by one module of
this package for one device kind (``generator`` or ``detector``) with the query keys it
takes, so an unknown scheme or key is refused when the configuration is loaded, not when
the engine starts. Adding a backend is one new module that calls :func:`register`, and
one import line in :mod:`dios.backends` (see the README's architecture section).

>>> url = parse_url("serial:///dev/ttyUSB0?baud=19200&timeout=0.5")
>>> url.scheme, url.target, url.query["baud"]
('serial', '/dev/ttyUSB0', '19200')
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dios.clock import SimClock


class BackendError(ValueError):
    """A device URL that names no registered scheme, or a bad setting in it."""


@dataclass(frozen=True)
class BackendURL:
    """A parsed device URL: ``scheme://target?query``."""

    text: str
    scheme: str
    target: str
    query: dict[str, str]

    def number(self, key: str, default: float, low: float, high: float) -> float:
        """A numeric query value within ``low``..``high`` (BackendError otherwise)."""
        raw = self.query.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise BackendError(f"{self.text}: {key}={raw!r} is not a number") from None
        if not low <= value <= high:
            raise BackendError(f"{self.text}: {key}={raw} outside {low:g}..{high:g}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.number(key, default, low, high)
        if value != int(value):
            raise BackendError(f"{self.text}: {key} must be an integer")
        return int(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.query.get(key, default)
        if value not in choices:
            raise BackendError(f"{self.text}: {key}={value!r} not one of {', '.join(choices)}")
        return value


@dataclass
class BuildContext:
    """What a backend factory may use: the simulated room and clock, faults, files."""

    clock: SimClock
    room: Any = None                 # simulators.room.XrayRoom when something is simulated
    seed: int = 0
    calibration_dir: Path | None = None
    faults: dict[str, Any] = field(default_factory=dict)


@dataclass
class Built:
    """A backend and what the engine needs to know about it."""

    backend: Any
    #: True when the backend is simulated (its physics runs on the simulation clock)
    simulated: bool
    #: the panel mode a detector URL selects ("" for the default)
    panel: str = ""
    #: for a simulated detector: where its X-rays come from (``room``, ``events``, ``beam``)
    xrays: str = ""
    #: for ``xrays=beam``: the loopback port of the beam trigger (0: any free port)
    beam_port: int = 0


Factory = Callable[[BackendURL, BuildContext], Built]


@dataclass(frozen=True)
class Scheme:
    kind: str
    name: str
    factory: Factory
    keys: frozenset[str]
    summary: str


_SCHEMES: dict[tuple[str, str], Scheme] = {}
#: old spellings still accepted in configuration files
_ALIASES = {"simulator": "simulator://"}


def register(kind: str, name: str, factory: Factory, keys: tuple[str, ...] = (),
             summary: str = "") -> None:
    """Register ``name://`` for devices of ``kind`` (``generator`` or ``detector``)."""
    if kind not in ("generator", "detector"):
        raise ValueError(f"unknown device kind {kind!r}")
    _SCHEMES[(kind, name)] = Scheme(kind, name, factory, frozenset(keys), summary)


def schemes(kind: str) -> list[Scheme]:
    """The schemes registered for ``kind``, by name."""
    return sorted((s for (k, _), s in _SCHEMES.items() if k == kind), key=lambda s: s.name)


def parse_url(text: str) -> BackendURL:
    """Split a device URL; BackendError when it is not ``scheme://...``."""
    if not isinstance(text, str) or not text.strip():
        raise BackendError("a device URL is required")
    text = text.strip()
    text = _ALIASES.get(text, text)
    if text.startswith("serial:") and not text.startswith("serial://"):
        text = text[len("serial:"):]  # the former spelling serial:<pyserial url>
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme.isidentifier():
        raise BackendError(f"{text!r} is not a device URL (scheme://...)")
    target, _, query = rest.partition("?")
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise BackendError(f"{text}: malformed query {query!r}") from None
    q: dict[str, str] = {}
    for k, v in pairs:
        if k in q:
            raise BackendError(f"{text}: {k} given twice")
        q[k] = v
    return BackendURL(text, scheme.lower(), target, q)


def lookup(kind: str, text: str) -> tuple[Scheme, BackendURL]:
    """The registered scheme for ``text`` and the parsed URL; BackendError otherwise."""
    try:
        url = parse_url(text)
    except BackendError as exc:
        raise BackendError(f"{kind}: {exc}") from None
    scheme = _SCHEMES.get((kind, url.scheme))
    if scheme is None:
        known = ", ".join(f"{s.name}://" for s in schemes(kind))
        raise BackendError(f"{kind} URL {text!r}: unknown scheme {url.scheme!r} (known: {known})")
    unknown = set(url.query) - scheme.keys
    if unknown:
        allowed = ", ".join(sorted(scheme.keys)) or "none"
        raise BackendError(f"{kind} URL {text!r}: unknown setting(s) {', '.join(sorted(unknown))}"
                           f" (allowed: {allowed})")
    return scheme, url


def check(kind: str, text: str) -> None:
    """Validate ``text`` as a ``kind`` URL without building anything (config loading):
    the scheme and keys, and the values, by building against a dry-run context."""
    scheme, url = lookup(kind, text)
    validate = getattr(scheme.factory, "validate", None)
    if validate is not None:
        validate(url)


def build(kind: str, text: str, ctx: BuildContext) -> Built:
    """Build the backend ``text`` names."""
    scheme, url = lookup(kind, text)
    return scheme.factory(url, ctx)
