"""The simulated flat-panel detector: a :class:`~dios.devices.backends.DetectorBackend`.

The backend listens in an :class:`~simulators.room.XrayRoom`. When armed, the first shot
that arrives closes the integration window (automatic exposure detection); a software
:meth:`SimDetectorBackend.trigger` closes it without X-rays (a dark frame, or sync mode).
:meth:`SimDetectorBackend.read_frame` then waits the mode's readout time in simulated
time and synthesises the frame from the room's scene (SID, collimation, phantom) with
:class:`simulators.frames.DetectorModel`, returning it with its ground truth. A mode's
model is built the first time an acquisition or calibration needs it (connecting and
selecting a mode stay fast), then kept.

Faults (from :class:`simulators.faults.FaultInjector`):

``detector_disconnect``
    The panel drops off the link: the running or next call raises
    ``DETECTOR_DISCONNECTED`` and the backend stays disconnected until :meth:`connect`
    succeeds (which fails while a persistent fault is still injected).
``lost_frame``
    The next readout never completes: :meth:`read_frame` raises ``FRAME_LOST`` after the
    transfer timeout.
``comm_timeout``
    The panel stops answering: calls raise ``TIMEOUT`` after a simulated wait;
    :meth:`read_frame` raises ``COMM_LOST`` (the image link is gone).
``beam_missed``
    The X-rays of the next shot miss the panel (another receptor is in the beam): the
    armed panel sees nothing and its window runs out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dios.clock import REAL_TIME, SimClock
from dios.codes import (
    ABORTED,
    BAD_PARAMETER,
    COMM_LOST,
    DETECTOR_DISCONNECTED,
    FRAME_LOST,
    OUT_OF_RANGE,
    TIMEOUT,
    WRONG_STATE,
    DiosError,
)
from dios.devices.backends import Frame, PanelMode
from simulators.faults import FaultInjector
from simulators.frames import Collimation, DetectorModel
from simulators.panels import DEFAULT_PANEL, PANELS
from simulators.phantom import canonical
from simulators.room import Scene, XrayRoom, XrayShot

#: Simulated seconds a call waits before reporting ``comm_timeout``.
COMM_TIMEOUT_S = 2.0
#: Simulated seconds the window stays open after the X-rays before readout starts.
INTEGRATION_S = 0.05
#: Simulated seconds a lost frame's transfer is waited for before ``FRAME_LOST``.
TRANSFER_TIMEOUT_S = 1.0
#: Real seconds between checks of faults and cancellation while waiting.
_POLL_REAL_S = 0.005

StageListener = Callable[[str], None]


@dataclass(frozen=True)
class _Trigger:
    """A window closed by software (no X-rays)."""

    time: float


class SimDetectorBackend:
    """A simulated panel with several modes, coupled to an X-ray room.

    Parameters
    ----------
    mode_names : sequence of str, optional
        Panel formats offered (names from :data:`simulators.panels.PANELS`); all of them
        when None. The first one (or ``CSI_4343`` when offered) is selected at start.
    room : XrayRoom
        The room whose shots the panel integrates.
    clock : SimClock
        Simulated time for readout and timeouts.
    seed : int
        Fixes the panel maps and the noise sequence.
    faults : FaultInjector, optional
        Run-time faults; a private, empty injector when None.
    """

    name = "Simulator"

    def __init__(self, mode_names: Sequence[str] | None = None, room: XrayRoom | None = None,
                 clock: SimClock = REAL_TIME, seed: int = 0,
                 faults: FaultInjector | None = None) -> None:
        names = list(PANELS) if mode_names is None else list(mode_names)
        if not names:
            raise ValueError("at least one panel mode is needed")
        unknown = [n for n in names if n not in PANELS]
        if unknown:
            raise ValueError(f"unknown panel mode(s) {unknown}; known: {', '.join(PANELS)}")
        self._modes = [PANELS[n] for n in names]
        self._mode = PANELS[DEFAULT_PANEL] if mode_names is None else self._modes[0]
        self.room = room if room is not None else XrayRoom()
        self.clock = clock
        self.seed = int(seed)
        self.faults = faults if faults is not None else FaultInjector()
        self._models: dict[str, DetectorModel] = {}
        self._model_lock = threading.Lock()
        self._rng = np.random.default_rng(self.seed)
        self._cond = threading.Condition()
        self._connected = False
        self._armed = False
        self._aborted = False
        self._pending: tuple[XrayShot, Scene] | _Trigger | None = None
        self._listener: StageListener | None = None
        #: simulated seconds between the X-rays (or trigger) and the start of readout
        self.integration_s = INTEGRATION_S
        self.frames_read = 0
        self.shots_ignored = 0
        #: shots that came while the panel was not armed (dose no panel took)
        self.shots_unarmed = 0
        #: shots that missed the armed panel (the ``beam_missed`` fault)
        self.shots_missed = 0
        self.room.listen(self._on_shot)

    # --- state -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the panel is on the link."""
        return self._connected

    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def mode(self) -> PanelMode:
        return self._mode

    def model(self, mode: PanelMode | None = None) -> DetectorModel:
        """The panel model of ``mode`` (default: the selected one), built on first use.

        Building synthesises the panel's maps (about a second for a 43 x 43 cm panel), so
        it happens in the acquisition or calibration job that first needs it, never in
        :meth:`connect` or :meth:`select_mode`; each mode is built once and kept.
        """
        mode = mode or self._mode
        m = self._models.get(mode.name)
        if m is not None:
            return m
        with self._model_lock:  # one build per mode, even when asked from two threads
            m = self._models.get(mode.name)
            if m is None:
                m = DetectorModel(mode, self.seed)
                self._models[mode.name] = m
        return m

    def set_stage_listener(self, fn: StageListener | None) -> None:
        """Register ``fn(stage)``, called with ``"acquiring"`` when the integration window
        closes on X-rays or a trigger and ``"readout"`` when readout starts."""
        self._listener = fn

    # --- fault plumbing --------------------------------------------------------------------
    def _check(self, call: str, cancel: threading.Event | None = None, *,
               acquiring: bool = False) -> None:
        """Raise the injected link faults for ``call``. During an acquisition a silent
        panel means the image link is gone (``COMM_LOST``, the panel disarmed) rather than
        a command timing out."""
        if self.faults.consume("detector_disconnect"):
            self._drop_link()
            raise DiosError(DETECTOR_DISCONNECTED, f"panel dropped off the link during {call}")
        if not self._connected:
            raise DiosError(DETECTOR_DISCONNECTED, f"{call}: panel not connected")
        if self.faults.consume("comm_timeout"):
            self.clock.sleep(COMM_TIMEOUT_S, cancel)
            if acquiring:
                with self._cond:
                    self._armed = False
                    self._pending = None
                raise DiosError(COMM_LOST, f"image link lost during {call}")
            raise DiosError(TIMEOUT, f"panel did not answer {call} within {COMM_TIMEOUT_S:g} s")

    def _drop_link(self) -> None:
        with self._cond:
            self._connected = False
            self._armed = False
            self._pending = None
            self._cond.notify_all()

    # --- DetectorBackend -------------------------------------------------------------------
    def connect(self) -> None:
        """Open the link (fails with ``DETECTOR_DISCONNECTED`` while unplugged)."""
        if self.faults.active("detector_disconnect"):
            self.faults.consume("detector_disconnect")
            raise DiosError(DETECTOR_DISCONNECTED, "panel not found on the link")
        if self.faults.consume("comm_timeout"):
            self.clock.sleep(COMM_TIMEOUT_S)
            raise DiosError(TIMEOUT, "panel did not answer connect")
        with self._cond:
            self._connected = True
            self._armed = False
            self._pending = None

    def disconnect(self) -> None:
        self._drop_link()

    def modes(self) -> list[PanelMode]:
        return list(self._modes)

    def select_mode(self, name: str) -> PanelMode:
        self._check("select_mode")
        for m in self._modes:
            if m.name == name:
                if self._armed:
                    raise DiosError(WRONG_STATE, "cannot change mode while armed")
                self._mode = m
                return m
        raise DiosError(BAD_PARAMETER, f"unknown mode {name!r}; offered: "
                        + ", ".join(m.name for m in self._modes))

    def arm(self) -> None:
        self._check("arm")
        with self._cond:
            self._armed = True
            self._aborted = False
            self._pending = None

    def trigger(self) -> None:
        self._check("trigger")
        with self._cond:
            if not self._armed:
                raise DiosError(WRONG_STATE, "trigger: panel not armed")
            if self._pending is None:
                self._pending = _Trigger(self.clock.now())
                self._cond.notify_all()

    def abort(self) -> None:
        self._check("abort")
        with self._cond:
            self._armed = False
            self._aborted = True
            self._pending = None
            self._cond.notify_all()

    def _on_shot(self, shot: XrayShot, scene: Scene) -> None:
        with self._cond:
            if not (self._connected and self._armed) or self._pending is not None:
                self.shots_ignored += 1
                self.shots_unarmed += 1
                return
            if self.faults.consume("beam_missed"):
                self.shots_ignored += 1
                self.shots_missed += 1
                return
            self._pending = (shot, scene)
            self._cond.notify_all()

    def _wait(self, seconds: float, cancel: threading.Event, call: str) -> None:
        """Wait ``seconds`` of simulated time, watching faults, abort and cancel."""
        end = self.clock.now() + seconds
        while True:
            self._check_running(cancel, call)
            left = end - self.clock.now()
            if left <= 0:
                return
            cancel.wait(min(self.clock.real(left), _POLL_REAL_S))

    def _check_running(self, cancel: threading.Event, call: str) -> None:
        if cancel.is_set() or self._aborted:
            raise DiosError(ABORTED, call)
        self._check(call, cancel, acquiring=True)

    def read_frame(self, cancel: threading.Event, timeout: float) -> Frame:
        """Wait (simulated ``timeout`` seconds at most) for the window to close, read out.

        Raises
        ------
        DiosError
            ``TIMEOUT`` when no X-rays or trigger arrived in time, ``ABORTED``,
            ``DETECTOR_DISCONNECTED``, ``COMM_LOST`` or ``FRAME_LOST`` on faults.
        """
        if not self._armed:
            self._check("read_frame")
            raise DiosError(WRONG_STATE, "read_frame: panel not armed")
        deadline = self.clock.now() + max(0.0, float(timeout))
        mode, model = self._mode, self.model()  # built while the window is open, not after
        while True:
            self._check_running(cancel, "acquisition")
            with self._cond:
                pending = self._pending
                if pending is None:
                    left = deadline - self.clock.now()
                    if left <= 0:
                        self._armed = False
                        raise DiosError(TIMEOUT, f"no exposure within {timeout:g} s")
                    self._cond.wait(min(self.clock.real(left), _POLL_REAL_S))
                    continue
            break
        self._stage("acquiring")
        self._wait(self.integration_s, cancel, "integration")
        with self._cond:
            self._armed = False
            self._pending = None
        self._stage("readout")
        self._wait(mode.readout_s, cancel, "readout")
        if self.faults.consume("lost_frame"):
            self._wait(TRANSFER_TIMEOUT_S, cancel, "transfer")
            raise DiosError(FRAME_LOST, f"no image data {TRANSFER_TIMEOUT_S:g} s after readout")
        self.frames_read += 1
        if isinstance(pending, _Trigger):
            pixels = model.dark(self._rng)
            return Frame(pixels, mode, "dark", {"mode": mode.name, "time": pending.time,
                                                "dose_ugy": 0.0, "trigger": "software",
                                                "index": self.frames_read})
        shot, scene = pending
        collimation = scene.collimation
        if collimation is not None and not isinstance(collimation, Collimation):
            raise DiosError(BAD_PARAMETER, f"scene collimation must be a Collimation, "
                            f"not {type(collimation).__name__}")
        try:
            phantom = canonical(scene.phantom)
        except ValueError as exc:
            raise DiosError(BAD_PARAMETER, str(exc)) from None
        if not 10.0 <= float(scene.sid_cm) <= 500.0:
            raise DiosError(OUT_OF_RANGE, f"scene SID {scene.sid_cm} cm outside 10-500 cm")
        pixels, truth = model.exposure(shot.kv, shot.mas, float(scene.sid_cm), collimation,
                                       phantom, self._rng)
        meta = {
            "mode": mode.name, "kv": shot.kv, "ma": shot.ma, "ms": shot.ms, "mas": shot.mas,
            "focus": shot.focus, "time": shot.time, "sid_cm": float(scene.sid_cm),
            "phantom": phantom, "dose_ugy": truth.dose_ugy,
            "pixel_pitch_mm": mode.pixel_pitch_mm, "bits": mode.bits,
            "trigger": "aed" if mode.aed else "sync", "index": self.frames_read,
        }
        return Frame(pixels, mode, "exposure", meta, truth)

    def _stage(self, stage: str) -> None:
        fn = self._listener
        if fn is not None:
            fn(stage)

    def calibration_frame(self, kind: str, cancel: threading.Event, timeout: float) -> Frame:
        """One dark frame, or one flat frame at the mode's calibration dose (40 % of range)."""
        if kind not in ("dark", "flat"):
            raise DiosError(BAD_PARAMETER, f"calibration frame kind must be dark or flat, not {kind!r}")
        self._check(f"calibration_frame({kind})", cancel)
        if self._armed:
            raise DiosError(WRONG_STATE, "calibration frame while armed")
        mode, model = self._mode, self.model()
        self._aborted = False
        self._wait(mode.readout_s + self.integration_s, cancel, f"{kind} frame")
        if kind == "dark":
            pixels, dose = model.dark(self._rng), 0.0
        else:
            dose = model.flat_dose_ugy()
            pixels = model.flat(dose, self._rng)
        self.frames_read += 1
        return Frame(pixels, mode, kind, {"mode": mode.name, "dose_ugy": dose,
                                          "index": self.frames_read})
