"""The X-ray enable line: no beam unless a panel is armed for it.

On real rooms a hardware ready line runs from the flat panel to the generator: the
generator may switch the tube on only while the panel says it is integrating, and the
beam stops when the line drops. :class:`XrayEnable` is that line in software, shared by
the detector and the generator devices of one room, so it holds for every command,
whichever client or service sent it:

* the detector *arms* the line when it enters Ready (its integration window is open);
* the generator takes the line at beam-on (:meth:`XrayEnable.beam_on`): refused with
  ``WRONG_STATE`` unless the panel is armed, and the arm is *consumed*: one arm, one
  beam; the next exposure needs the panel armed again;
* the detector *drops* the line whenever it leaves Ready for any reason but X-rays
  (Abort, Disconnect, a software trigger, a fault, the window running out). A drop
  while the beam is on first stops the beam: the generator's registered terminator is
  called and the drop waits until the generator reports the beam off.

The check and the state change happen under one lock, so an Abort that races an Expose
is either before beam-on (the Expose is refused) or after it (the beam is stopped
before the panel stands down); there is no third order.

>>> line = XrayEnable()
>>> line.enabled
False
>>> arm = line.panel_armed()
>>> line.beam_on() == arm, line.enabled    # the arm is used by this beam
(True, False)
>>> line.beam_off()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dios.codes import WRONG_STATE, DiosError

log = logging.getLogger(__name__)

#: Called with a reason when the panel drops out while the beam is on; must stop the beam.
Terminator = Callable[[str], None]


class XrayEnable:
    """The software X-ray enable line of one room (thread-safe)."""

    def __init__(self, stop_timeout: float = 5.0) -> None:
        self._cond = threading.Condition()
        self._arm = 0          # the current arm number, 0 while the panel is not armed
        self._arms = 0         # arms so far
        self._beam = 0         # the arm number the beam in progress uses, 0 when off
        self._terminator: Terminator | None = None
        self.stop_timeout = stop_timeout
        #: counters for tests and benches
        self.beams = 0
        self.refused = 0
        self.terminated = 0

    # --- state -------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True while the panel is armed and its arm has not been used by a beam."""
        return self._arm != 0

    @property
    def beam(self) -> bool:
        """True between beam-on and beam-off."""
        return self._beam != 0

    @property
    def arm_number(self) -> int:
        """The current arm number (0 while not armed); increases with every arm."""
        return self._arm

    @property
    def arms(self) -> int:
        """How many times the panel has been armed."""
        return self._arms

    def set_terminator(self, fn: Terminator | None) -> None:
        """The generator's beam stop (one generator per line)."""
        with self._cond:
            self._terminator = fn

    # --- the panel's side ----------------------------------------------------------------------
    def panel_armed(self) -> int:
        """The panel opened its window: a new arm; returns its number."""
        with self._cond:
            self._arms += 1
            self._arm = self._arms
            return self._arm

    def panel_exposed(self) -> None:
        """The panel took X-rays (its window closed on them): the arm is used up."""
        with self._cond:
            self._arm = 0

    def panel_dropped(self, reason: str, wait: bool = True) -> bool:
        """The panel leaves its window for ``reason``: the line drops.

        A beam in progress is stopped first; with ``wait`` this returns once the generator
        reports the beam off (at most ``stop_timeout`` seconds). Returns False when the beam
        did not stop in time.
        """
        with self._cond:
            self._arm = 0
            if not self._beam:
                return True
            stop = self._terminator
            self.terminated += 1
        log.warning("X-ray enable dropped during the beam (%s): stopping the beam", reason)
        if stop is not None:
            try:
                stop(reason)
            except Exception:  # noqa: BLE001 - the wait below reports a beam that goes on
                log.exception("stopping the beam failed")
        if not wait:
            return True
        deadline = time.monotonic() + self.stop_timeout
        with self._cond:
            while self._beam:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("the beam did not stop within %.1f s of the panel dropping out",
                              self.stop_timeout)
                    return False
                self._cond.wait(left)
        return True

    # --- the generator's side ------------------------------------------------------------------
    def beam_on(self) -> int:
        """Take the line for one beam; ``WRONG_STATE`` (nothing changed) unless armed.

        Returns the arm number the beam uses. Call :meth:`beam_off` when the exposure
        ends, whatever way it ends.
        """
        with self._cond:
            if self._beam:
                self.refused += 1
                raise DiosError(WRONG_STATE, "X-ray enable: a beam is already on")
            if not self._arm:
                self.refused += 1
                raise DiosError(WRONG_STATE, "X-ray enable is off: the detector is not armed "
                                             "for this exposure (prepare it first)")
            self._beam, self._arm = self._arm, 0
            self.beams += 1
            return self._beam

    def beam_off(self) -> None:
        """The beam has ended (done, aborted or refused by the hardware)."""
        with self._cond:
            self._beam = 0
            self._cond.notify_all()
