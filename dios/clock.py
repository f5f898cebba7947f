"""Simulated time: the same code runs at real time on a bench and faster in tests.

``SimClock(scale=50)`` makes one simulated second last 20 ms of wall time. Devices and
simulators measure durations (prep time, exposure time, anode cooling, calibration) in
simulated seconds through a clock, never through ``time`` directly.
"""

from __future__ import annotations

import threading
import time


class SimClock:
    """A monotonic clock whose seconds run ``scale`` times faster than real ones."""

    def __init__(self, scale: float = 1.0) -> None:
        if not scale > 0:
            raise ValueError("clock scale must be > 0")
        self.scale = float(scale)
        self._t0 = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since the clock was made."""
        return (time.monotonic() - self._t0) * self.scale

    def sleep(self, seconds: float, cancel: threading.Event | None = None) -> bool:
        """Sleep ``seconds`` of simulated time; return True if ``cancel`` was set meanwhile."""
        real = max(0.0, seconds) / self.scale
        if cancel is None:
            time.sleep(real)
            return False
        return cancel.wait(real)

    def real(self, seconds: float) -> float:
        """Wall-clock seconds that ``seconds`` of simulated time take."""
        return seconds / self.scale


REAL_TIME = SimClock(1.0)
