"""Explicit transition-table state machines for devices.

A device declares its states, the events that move it, and a table
``{(state, event): next_state}``. Nothing else may change the state: an event missing
from the table for the current state is refused with ``WRONG_STATE`` and the state is
left as it was. Every change is reported to an ``on_change`` callback (the device
publishes it on the bus), called while the machine's lock is held so that reports arrive
in the order of the transitions; the callback must not block (it may fire the machine
again: the lock is re-entrant).

>>> from enum import Enum
>>> class S(Enum):
...     IDLE = "IDLE"; BUSY = "BUSY"
>>> m = StateMachine("demo", {(S.IDLE, "start"): S.BUSY, (S.BUSY, "stop"): S.IDLE}, S.IDLE)
>>> m.fire("start")
<S.BUSY: 'BUSY'>
>>> m.can("start")
False
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from enum import Enum

from dios.codes import WRONG_STATE, DiosError

ChangeCallback = Callable[[Enum, Enum, str], None]


class StateMachine:
    """A thread-safe state machine driven only by its transition table."""

    def __init__(
        self,
        name: str,
        table: Mapping[tuple[Enum, Hashable], Enum],
        initial: Enum,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self.name = name
        self.table = dict(table)
        self._state = initial
        self._lock = threading.RLock()
        self._on_change = on_change
        self.history: list[tuple[Enum, str, Enum]] = []

    @property
    def state(self) -> Enum:
        return self._state

    def can(self, event: Hashable) -> bool:
        """True when ``event`` is allowed in the current state."""
        return (self._state, event) in self.table

    def events(self) -> list[Hashable]:
        """The events allowed in the current state."""
        return [e for (s, e) in self.table if s == self._state]

    def require(self, event: Hashable) -> None:
        """Raise ``WRONG_STATE`` unless ``event`` is allowed now (state untouched)."""
        if not self.can(event):
            raise DiosError(
                WRONG_STATE, f"{self.name}: '{event}' not allowed in state {self._state.value}",
                state=self._state.value,
            )

    def fire(self, event: Hashable) -> Enum:
        """Apply ``event``; return the new state or raise ``WRONG_STATE`` (state untouched)."""
        with self._lock:
            self.require(event)
            old = self._state
            new = self.table[(old, event)]
            self._state = new
            self.history.append((old, str(event), new))
            if len(self.history) > 256:
                del self.history[:128]
            # reported under the lock, so reports follow the order of the transitions
            if self._on_change is not None and new is not old:
                self._on_change(old, new, str(event))
        return new

    def fire_if(self, event: Hashable) -> bool:
        """Apply ``event`` when allowed; return whether it was applied."""
        with self._lock:
            if not self.can(event):
                return False
            self.fire(event)
            return True
