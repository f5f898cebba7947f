"""``simulator://``: the simulated generator and the simulated flat panel.

``generator = "simulator://"``
    The generator simulator (tube physics, heat, faults) in process; its X-rays go into
    the simulated room.
``detector = "simulator://CSI_4343?xrays=room"``
    The detector simulator with the panel mode named after ``//`` (default: the
    ``[devices] panel`` setting). ``xrays`` says where its X-rays come from:
    ``room`` (the simulated generator's shots; the default with a simulated generator)
    ``events`` (the exposures any generator reports on the bus, a real one over serial
    or TCP included: a generator-only bench; the default with any other generator), or
    ``beam`` (shots a bench sends to a loopback trigger port, ``beam_port``, 0 = any
    free one: see :mod:`simulators.beam`). ``seed`` fixes the panel's maps and noise.

Simulated physics runs on the engine's simulation clock (``clock_scale``).
"""

from __future__ import annotations

from dios.backends.registry import BackendError, BackendURL, BuildContext, Built, register


def _generator(url: BackendURL, ctx: BuildContext) -> Built:
    from simulators.faults import FaultInjector
    from simulators.generator import SimGeneratorBackend

    if url.target:
        raise BackendError(f"{url.text}: the generator simulator takes no target")
    faults = ctx.faults.setdefault("generator", FaultInjector())
    seed = url.integer("seed", ctx.seed, 0, 2**31 - 1)
    return Built(SimGeneratorBackend(clock=ctx.clock, room=ctx.room, faults=faults, seed=seed),
                 simulated=True)


def _panel(url: BackendURL) -> str:
    from simulators.panels import PANELS

    name = url.target.strip("/")
    if name and name not in PANELS:
        raise BackendError(f"{url.text}: unknown panel {name!r} (known: {', '.join(PANELS)})")
    return name


def _detector(url: BackendURL, ctx: BuildContext) -> Built:
    from simulators.detector import SimDetectorBackend
    from simulators.faults import FaultInjector

    panel = _panel(url)
    xrays = url.choice("xrays", "", ("", "room", "events", "beam"))
    faults = ctx.faults.setdefault("detector", FaultInjector())
    seed = url.integer("seed", ctx.seed, 0, 2**31 - 1)
    backend = SimDetectorBackend(room=ctx.room, clock=ctx.clock, seed=seed, faults=faults)
    return Built(backend, simulated=True, panel=panel, xrays=xrays,
                 beam_port=url.integer("beam_port", 0, 0, 65535))


def _validate_generator(url: BackendURL) -> None:
    if url.target:
        raise BackendError(f"{url.text}: the generator simulator takes no target")
    url.integer("seed", 0, 0, 2**31 - 1)


def _validate_detector(url: BackendURL) -> None:
    _panel(url)
    url.choice("xrays", "", ("", "room", "events", "beam"))
    url.integer("seed", 0, 0, 2**31 - 1)
    url.integer("beam_port", 0, 0, 65535)
    if "beam_port" in url.query and url.query.get("xrays") != "beam":
        raise BackendError(f"{url.text}: beam_port needs xrays=beam")


_generator.validate = _validate_generator  # type: ignore[attr-defined]
_detector.validate = _validate_detector  # type: ignore[attr-defined]

register("generator", "simulator", _generator, ("seed",),
         "generator simulator in process (X-rays into the simulated room)")
register("detector", "simulator", _detector, ("xrays", "seed", "beam_port"),
         "detector simulator; simulator://PANEL?xrays=room|events|beam")
