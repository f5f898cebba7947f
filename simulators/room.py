"""The simulated X-ray room: couples the simulated generator's output to the detector.

A real generator and panel are coupled by physics (and a sync cable); the simulators are
coupled by this object. The generator simulator calls :meth:`XrayRoom.emit` when an
exposure ends; the detector simulator, if armed, integrates it. The *scene* (what lies
between tube and panel: phantom, collimation, source-image distance) is set on the room
by the caller (a test, a bench, or the demo workflow).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class XrayShot:
    """One exposure as it leaves the tube."""

    kv: float
    ma: float
    ms: float
    mas: float
    focus: int
    time: float  # simulated time at the end of the exposure


@dataclass
class Scene:
    """What the beam meets. ``collimation`` and ``phantom`` are understood by the detector
    simulator (see ``simulators.frames``); ``None`` means its defaults."""

    sid_cm: float = 115.0
    collimation: Any = None
    phantom: str = "chest"
    extra: dict[str, Any] = field(default_factory=dict)


class XrayRoom:
    """Broadcasts shots to every armed detector listening in the room."""

    def __init__(self, scene: Scene | None = None) -> None:
        self.scene = scene or Scene()
        self._listeners: list[Callable[[XrayShot, Scene], None]] = []
        self._lock = threading.Lock()
        self.shots = 0

    def listen(self, fn: Callable[[XrayShot, Scene], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def emit(self, shot: XrayShot) -> None:
        self.shots += 1
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            fn(shot, self.scene)
