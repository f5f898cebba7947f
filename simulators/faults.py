"""Run-time fault injection shared by the simulators.

Faults are switched on and off while a simulator runs (from a test, a bench script or
over the wire). A fault is either *persistent* (until cleared: an open door, an
overheated tube, an unplugged panel) or *counted* (fires ``count`` times: one dropped
reply, one lost frame).
"""

from __future__ import annotations

import threading

#: The faults the simulators understand.
KNOWN = frozenset({
    "comm_timeout",          # the device stops answering (requests time out)
    "link_hang",             # the link hangs: every call blocks until the fault is cleared
    "dropped_reply",         # one reply is lost on the way back
    "interlock_open",        # door / safety interlock open: no prepare, no exposure
    "tube_overheat",         # anode at its heat limit regardless of the heat model
    "detector_disconnect",   # panel disconnects (mid-acquisition if one is running)
    "lost_frame",            # the next readout never arrives
    "beam_missed",           # the X-rays miss the panel (another receptor in the beam)
})


class FaultInjector:
    """A thread-safe set of active faults."""

    def __init__(self) -> None:
        self._active: dict[str, int | None] = {}
        self._lock = threading.Lock()

    def inject(self, name: str, count: int | None = None) -> None:
        """Activate ``name``: persistent when ``count`` is None, else for ``count`` hits."""
        if name not in KNOWN:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(KNOWN))}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._active[name] = count

    def clear(self, name: str | None = None) -> None:
        """Clear one fault, or all of them."""
        with self._lock:
            if name is None:
                self._active.clear()
            else:
                self._active.pop(name, None)

    def active(self, name: str) -> bool:
        """True while ``name`` is active (does not consume a counted fault)."""
        return name in self._active

    def consume(self, name: str) -> bool:
        """True if ``name`` fires now; a counted fault is used up by this call."""
        with self._lock:
            if name not in self._active:
                return False
            left = self._active[name]
            if left is not None:
                if left <= 1:
                    del self._active[name]
                else:
                    self._active[name] = left - 1
            return True

    def snapshot(self) -> dict[str, int | None]:
        with self._lock:
            return dict(self._active)
