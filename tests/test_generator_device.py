"""The generator device on the bus: transitions, technique rules, error codes, faults, heat.

The ``scenario_*`` functions take a :class:`GenEnv` and are run here on the in-process
simulator backend and, by ``tests/test_generator_wire.py``, through the serial driver over
a pty pair and a TCP socket against the wire simulator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from enum import Enum

import pytest

from dios.bus import DeviceBus
from dios.clock import SimClock
from dios.codes import (
    ABORTED,
    BAD_PARAMETER,
    BUSY,
    INTERLOCK_OPEN,
    OUT_OF_RANGE,
    SUCCESS,
    TIMEOUT,
    TUBE_OVERHEAT,
    UNKNOWN_COMMAND,
    WRONG_STATE,
    DiosError,
    ResultCode,
)
from dios.devices.backends import GeneratorBackend, GeneratorLimits
from dios.devices.generator import TRANSITIONS, Generator, GeneratorState
from dios.devices.tables import GeneratorTables
from dios.fsm import StateMachine
from dios.messages import Event, EventKind, Reply
from dios.uri import GENERATOR
from simulators.faults import FaultInjector
from simulators.generator import SimGeneratorBackend, heat_units
from simulators.room import XrayRoom, XrayShot

S = GeneratorState
TABLES = GeneratorTables.for_limits(GeneratorLimits())
#: Deadline for what takes milliseconds when idle (a busy machine may take seconds).
DEADLINE_S = 60.0
#: Wall seconds a prepare is held in the scenarios that look at the device while it
#: prepares: far longer than a busy machine needs between the Prepare reply and the
#: look, and shorter than the serial driver's prepare timeout (5 s) in the wire tests.
PREP_HOLD_S = 3.0


class GenEnv:
    """A bus with the Generator on a simulated generator, in process or over a wire."""

    def __init__(self, transport: str = "sim", scale: float = 200.0,
                 limits: GeneratorLimits | None = None, retries: int = 1,
                 timeout: float = 0.25) -> None:
        self.transport = transport
        self.clock = SimClock(scale)
        self.faults = FaultInjector()
        self.room = XrayRoom()
        self.shots: list[XrayShot] = []
        self.room.listen(lambda shot, scene: self.shots.append(shot))
        self.sim = SimGeneratorBackend(self.clock, self.room, self.faults, limits, seed=7)
        self.model = self.sim.model
        self.server = None
        backend: GeneratorBackend = self.sim
        if transport != "sim":
            from drivers.generator_serial import SerialGeneratorBackend
            from simulators.generator_wire import GeneratorWireServer

            self.server = GeneratorWireServer(self.sim, transport).start()
            backend = SerialGeneratorBackend(self.server.url, timeout=timeout, retries=retries)
        self.backend = backend
        self.bus = DeviceBus(timeout=10.0)
        self.gen = Generator(GENERATOR, self.bus.hub, backend, self.clock)
        self.bus.register(self.gen)
        self.sub = self.bus.hub.subscribe(GENERATOR)
        self.seen: list[Event] = []
        self.bus.start()
        self._tx = 0

    def connect(self) -> GenEnv:
        self.gen.connect()
        return self

    def close(self) -> None:
        self.bus.stop()
        if self.server is not None:
            self.server.stop()

    # --- helpers -------------------------------------------------------------------------
    def call(self, name: str, param: str = "", tx: str | None = None) -> Reply:
        self._tx += 1
        return self.bus.call(GENERATOR, name, param, tx or f"tx{self._tx}", "tester")

    def ok(self, name: str, param: str = "", tx: str | None = None) -> Reply:
        reply = self.call(name, param, tx)
        assert reply.code == SUCCESS.hex, (name, param, reply.code, reply.description)
        return reply

    def fails(self, name: str, param: str, code: ResultCode) -> Reply:
        """Send a command that must fail with ``code`` and leave state and technique alone."""
        state, technique = self.gen.state, self.gen.technique
        reply = self.call(name, param)
        assert reply.code == code.hex, (name, param, reply.code, reply.description)
        assert reply.description and reply.solution is not None
        assert self.gen.state is state, (name, param, self.gen.state)
        assert self.gen.technique == technique
        return reply

    def wait_state(self, state: GeneratorState, timeout: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout
        while self.gen.state is not state:
            assert time.monotonic() < deadline, f"state {self.gen.state} never became {state}"
            time.sleep(0.001)

    def events(self, timeout: float = 0.05) -> list[Event]:
        """Every event received so far (waits ``timeout`` for late ones), once the STATE
        event of the device's current state is among them (a state is set just before
        its event is published, so that event may still be on its way)."""
        end = time.monotonic() + DEADLINE_S
        while True:
            while (ev := self.sub.get(timeout)) is not None:
                self.seen.append(ev)
            states = [e.value for e in self.seen if e.kind == EventKind.STATE]
            current = self.gen.status_string
            if (states[-1] if states else "GENERATOR_STATUS_INIT") == current:
                return self.seen
            assert time.monotonic() < end, f"no STATE event for {current}; saw {states}"

    @contextlib.contextmanager
    def slow_prepare(self, wall_s: float = PREP_HOLD_S) -> Iterator[None]:
        """Make the simulated generator's prepare (rotor boost) last ``wall_s`` seconds of
        wall time at any clock scale, for a test that looks at the device while it
        prepares. Keep the block open until that prepare has started (or ended)."""
        sim_s = wall_s * self.clock.scale
        self.model.prep_time = lambda: sim_s  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self.model.prep_time

    def wait_event(self, kind: str, name: str | None = None, tx: str | None = None,
                   timeout: float = DEADLINE_S) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.seen:
                if ev.kind == kind and (name is None or ev.name == name) and (tx is None or ev.reqTransaction == tx):
                    return ev
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind}/{name} event (tx {tx}); saw {[(e.kind, e.name) for e in self.seen]}"
            ev = self.sub.get(min(left, 0.05))
            if ev is not None:
                self.seen.append(ev)

    def expose_cycle(self, tx: str = "shot") -> dict:
        """Prepare, expose and return the exposure record (asserting every step)."""
        self.ok("Prepare", tx=tx + "-p")
        self.wait_state(S.Ready)
        self.ok("Expose", tx=tx)
        ev = self.wait_event(EventKind.EXPOSURE, tx=tx)
        self.wait_state(S.Standby)
        return ev.data["record"]


@pytest.fixture
def env() -> Iterator[GenEnv]:
    e = GenEnv("sim").connect()
    yield e
    e.close()


# --- scenarios shared with the wire tests ------------------------------------------------------------
def scenario_exposure_cycle(env: GenEnv) -> None:
    env.ok("SetParam_KV", "81")
    env.ok("SetParam_MA", "200")
    env.ok("SetParam_MS", "50")
    with env.slow_prepare(1.0):
        prep = env.ok("Prepare", tx="P1")
        assert prep.result == "GENERATOR_STATUS_PREPARE"
        assert env.gen.state is S.Preparation and not env.gen.ready
        env.wait_state(S.Ready)
    assert env.gen.ready
    env.ok("Expose", tx="X1")
    ev = env.wait_event(EventKind.EXPOSURE, tx="X1")
    env.wait_state(S.Standby)
    rec = ev.data["record"]
    assert ev.reqClientID == "tester"
    assert rec["kv"] == pytest.approx(81, rel=0.03)
    assert rec["ma"] == pytest.approx(200, rel=0.05)
    assert rec["ms"] == pytest.approx(50, rel=0.03)
    assert rec["mas"] == pytest.approx(10, rel=0.05)
    assert rec["mas"] == pytest.approx(rec["ma"] * rec["ms"] / 1000, rel=1e-3)
    assert rec["kv"] != 81.0 or rec["ma"] != 200.0  # a real readback, not the set values
    assert rec["dap_dgycm2"] > 0 and rec["heat_hu"] == pytest.approx(heat_units(rec["kv"], rec["mas"]), rel=1e-3)
    assert len(env.shots) == 1 and env.shots[0].mas == pytest.approx(rec["mas"])
    states = [(e.value, e.reqTransaction) for e in env.events() if e.kind == EventKind.STATE]
    assert ("GENERATOR_STATUS_PREPARE", "P1") in states
    assert ("GENERATOR_STATUS_READY", "P1") in states
    assert ("GENERATOR_STATUS_EXPOSURE", "X1") in states
    assert ("GENERATOR_STATUS_STANDBY", "X1") in states
    status = env.ok("GetStatus")
    assert status.result == "GENERATOR_STATUS_STANDBY"
    assert status.data["heat_percent"] > 0 and status.data["interlock_closed"] is True
    assert status.data["technique"]["kV"] == 81


def scenario_power_and_focus_coupling(env: GenEnv) -> None:
    env.ok("SetParam_KV", "150")
    r = env.ok("SetParam_MA", "1000")
    assert r.result == "500"  # 80 kW / 150 kV = 533 mA -> R10 entry not above: 500
    assert env.gen.technique.kv * env.gen.technique.ma / 1000 <= 80
    env.ok("SetParam_KV", "80")
    assert env.ok("SetParam_MA", "800").result == "800"
    env.ok("SetParam_MS", "50")
    r = env.ok("SetParam_KV", "125", tx="K125")
    assert r.result == "125"
    t = env.gen.technique
    assert t.ma == 630  # 80 kW / 125 kV = 640 mA -> 630
    assert t.ms == 64 or t.ms == 71  # raised so that mAs stays at least 40
    assert t.mas >= 40 and t.mas == pytest.approx(t.ma * t.ms / 1000, rel=1e-3)
    params = {e.name: e.value for e in env.events() if e.kind == EventKind.PARAM and e.reqTransaction == "K125"}
    assert params["KV"] == "125" and params["MA"] == "630" and "MS" in params
    r = env.ok("SetParam_Focus", "SMALL")
    assert r.result == "0" and env.gen.technique.ma == 400
    assert env.ok("SetParam_MA", "500").result == "400"
    assert env.ok("GetParam_Focus").data["name"] == "SMALL"
    env.ok("SetParam_Focus", "large")
    assert env.ok("SetParam_MA", "500").result == "500"


def scenario_interlock_fault_and_recovery(env: GenEnv) -> None:
    env.faults.inject("interlock_open")
    r = env.call("Prepare", tx="IL")
    assert r.code == INTERLOCK_OPEN.hex
    assert env.gen.state is S.Error and not env.gen.ready
    fault = env.wait_event(EventKind.FAULT, tx="IL")
    assert fault.data["code"] == INTERLOCK_OPEN.hex and fault.data["latched"] is True
    assert "Interlock" in fault.data["description"]
    assert env.bus.global_status()["gen_status"] == "GENERATOR_STATUS_ERROR"
    env.fails("SetParam_KV", "90", WRONG_STATE)
    r = env.fails("ResetError", "", INTERLOCK_OPEN)
    assert r.data["fault"] == INTERLOCK_OPEN.hex
    assert env.ok("GetStatus").data["interlock_closed"] is False
    env.faults.clear("interlock_open")
    assert env.ok("ResetError").result == "GENERATOR_STATUS_STANDBY"
    assert env.gen.state is S.Standby and env.gen.fault is None
    env.expose_cycle("after-il")


def scenario_overheat_refusal_and_recovery(env: GenEnv) -> None:
    env.faults.inject("tube_overheat")
    r = env.fails("Prepare", "", TUBE_OVERHEAT)
    assert r.data["heat_percent"] == 100
    ev = env.wait_event(EventKind.FAULT, "TUBE_OVERHEAT")
    assert ev.data["latched"] is False
    assert env.gen.state is S.Standby and env.gen.ready
    env.faults.clear("tube_overheat")
    env.expose_cycle("after-heat")


def scenario_timeout_fault_and_recovery(env: GenEnv) -> None:
    env.faults.inject("comm_timeout")
    r = env.call("SetParam_KV", "90", tx="TO")
    assert r.code == TIMEOUT.hex
    assert env.gen.state is S.Error and env.gen.technique.kv == 70
    fault = env.wait_event(EventKind.FAULT, tx="TO")
    assert fault.data["code"] == TIMEOUT.hex
    env.fails("ResetError", "", TIMEOUT)
    env.faults.clear("comm_timeout")
    env.ok("ResetError")
    assert env.gen.state is S.Standby
    assert env.ok("SetParam_KV", "90").result == "90"
    assert env.model.technique.kv == 90


def scenario_abort_during_preparation_and_exposure(env: GenEnv) -> None:
    # a prepare held for seconds and a 10 s exposure (10 s of wall time at scale 1, 2 s at
    # scale 5): both aborted right away
    env.ok("SetParam_KV", "60")
    env.ok("SetParam_MA", "100")
    env.ok("SetParam_MS", "10000")
    with env.slow_prepare():
        env.ok("Prepare")
        assert env.gen.state is S.Preparation
        env.ok("Abort", tx="AB1")
    assert env.gen.state is S.Standby
    assert not env.model.prepared
    env.ok("Prepare")
    env.wait_state(S.Ready)
    env.ok("Abort")
    assert env.gen.state is S.Standby and not env.model.prepared
    env.ok("Prepare")
    env.wait_state(S.Ready)
    env.ok("Expose", tx="X")
    assert env.gen.state is S.ExposureInProgress
    env.fails("SetParam_KV", "70", WRONG_STATE)
    env.ok("Abort", tx="AB3")
    assert env.gen.state is S.Standby
    ev = env.wait_event(EventKind.EXPOSURE, tx="X")
    assert ev.data["aborted"] is True and ev.data["record"]["ms"] < 10000
    assert env.ok("GetStatus").result == "GENERATOR_STATUS_STANDBY"


# --- the state machine ---------------------------------------------------------------------------------
def test_transition_table_is_the_only_way_to_change_state() -> None:
    events = sorted({e for (_, e) in TRANSITIONS})
    for state in GeneratorState:
        for event in events:
            m = StateMachine("g", TRANSITIONS, state)
            if (state, event) in TRANSITIONS:
                assert m.fire(event) is TRANSITIONS[(state, event)]
            else:
                with pytest.raises(DiosError) as exc:
                    m.fire(event)
                assert exc.value.code is WRONG_STATE and m.state is state


def test_every_state_but_error_faults_to_error_and_only_error_resets() -> None:
    for state in GeneratorState:
        assert ((state, "fault") in TRANSITIONS) == (state is not S.Error)
    assert [s for (s, e) in TRANSITIONS if e == "reset"] == [S.Error]
    assert {s.value for s in GeneratorState} == {"INIT", "STANDBY", "PREPARE", "READY", "EXPOSURE", "ERROR"}


def test_initialization_to_standby_and_status_strings() -> None:
    e = GenEnv("sim")
    try:
        assert e.gen.state is S.Initialization and not e.gen.ready
        assert e.bus.global_status()["gen_status"] == "GENERATOR_STATUS_INIT"
        e.fails("SetParam_KV", "80", WRONG_STATE)
        e.fails("Prepare", "", WRONG_STATE)
        assert e.ok("Initialize", tx="I").result == "GENERATOR_STATUS_STANDBY"
        ev = e.wait_event(EventKind.STATE, tx="I")
        assert ev.data["previous"] == "GENERATOR_STATUS_INIT"
        gs = e.bus.global_status()
        assert gs["gen_status"] == "GENERATOR_STATUS_STANDBY" and gs["gen_ready"] is True
        e.fails("Initialize", "", WRONG_STATE)
    finally:
        e.close()


def test_initialization_fault_goes_to_error_and_reset_connects() -> None:
    e = GenEnv("sim")
    try:
        e.faults.inject("comm_timeout")
        r = e.call("Initialize", tx="I0")
        assert r.code == TIMEOUT.hex and e.gen.state is S.Error
        assert e.wait_event(EventKind.FAULT, tx="I0").data["code"] == TIMEOUT.hex
        e.faults.clear()
        e.ok("ResetError")
        assert e.gen.state is S.Standby and e.model.technique == e.gen.technique
    finally:
        e.close()


def test_exposure_cycle(env: GenEnv) -> None:
    scenario_exposure_cycle(env)


def test_abort_from_preparation_ready_and_exposure() -> None:
    e = GenEnv("sim", scale=1).connect()
    try:
        scenario_abort_during_preparation_and_exposure(e)
    finally:
        e.close()


def test_wrong_state_commands_change_nothing(env: GenEnv) -> None:
    env.fails("Expose", "", WRONG_STATE)
    env.fails("Abort", "", WRONG_STATE)
    env.fails("ResetError", "", WRONG_STATE)
    env.fails("Initialize", "", WRONG_STATE)
    env.ok("Prepare")
    env.wait_state(S.Ready)
    env.fails("Prepare", "", WRONG_STATE)
    # technique changes are allowed in Ready (the generator keeps its boost)
    assert env.ok("SetParam_KV", "72").result == "72"
    assert env.gen.state is S.Ready
    env.ok("Abort")


def test_set_refused_while_preparing() -> None:
    e = GenEnv("sim").connect()
    try:
        with e.slow_prepare(600.0):  # ended by the Abort
            e.ok("Prepare")
            assert e.gen.state is S.Preparation
            for name, param in (("SetParam_KV", "80"), ("IncParam_MA", ""),
                                ("SetParam_Focus", "0"), ("SetParam_Technique", "2"),
                                ("Expose", "")):
                e.fails(name, param, WRONG_STATE)
            e.ok("Abort")
        assert e.gen.state is S.Standby
    finally:
        e.close()


# --- parameters ----------------------------------------------------------------------------------------
def test_set_returns_the_value_snapped_to_the_table(env: GenEnv) -> None:
    assert env.ok("SetParam_KV", "70.4").result == "70"
    assert env.ok("SetParam_KV", " 81.6 ").result == "82"
    assert env.ok("SetParam_MA", "130").result == "125"
    assert env.ok("SetParam_MA", "14.2").result == "16"
    assert env.ok("SetParam_MS", "103").result == "100"
    assert env.ok("GetParam_MAS").result == "1.6"
    assert env.ok("SetParam_MAS", "2").result == "2"
    assert env.gen.technique.ms == 125  # mode 0: mAs is reached through ms at fixed mA
    assert env.ok("SetParam_AECField", "111").result == "111"
    assert env.ok("SetParam_AECDensity", "-3").result == "-3"
    assert env.ok("SetParam_Technique", "AEC").result == "2"
    assert env.ok("GetParam_Technique").data["name"] == "AEC"
    assert env.model.technique == env.gen.technique  # every accepted value reached the generator


def test_every_accepted_change_publishes_a_param_event_with_its_transaction(env: GenEnv) -> None:
    env.ok("SetParam_KV", "90", tx="T-kv")
    env.ok("SetParam_KV", "90", tx="T-same")
    env.ok("SetParam_MA", "160", tx="T-ma")
    evs = [e for e in env.events() if e.kind == EventKind.PARAM]
    assert [(e.name, e.value, e.reqTransaction) for e in evs] == [
        ("KV", "90", "T-kv"), ("MA", "160", "T-ma"), ("MAS", "16", "T-ma")]
    assert all(e.reqClientID == "tester" for e in evs)


def test_step_commands_move_along_the_generators_tables(env: GenEnv) -> None:
    assert env.ok("IncParam_KV").result == "71"
    assert env.ok("DecParam_KV", "11").result == "60"
    assert env.ok("IncParam_MA").result == "160"
    assert env.ok("DecParam_MA", "3").result == "80"
    assert env.ok("IncParam_MS", "3").result == "140"
    assert env.ok("DecParam_MS").result == "125"
    assert env.ok("IncParam_MAS").result == "11.2"  # mode 0: ms moves to 140 at 80 mA
    assert env.ok("IncParam_AECDensity", "9").result == "5"
    assert env.ok("DecParam_AECDensity", "3").result == "2"
    assert env.ok("DecParam_Focus").result == "0"
    assert env.ok("DecParam_Focus").result == "0"
    assert env.ok("IncParam_Technique", "5").result == "2"
    assert env.ok("DecParam_Technique").result == "1"
    assert env.ok("IncParam_AECField").result == "011"
    assert env.ok("DecParam_AECField", "2").result == "001"
    env.ok("SetParam_KV", "150")
    assert env.ok("IncParam_KV").result == "150"
    env.ok("SetParam_Focus", "1")
    env.ok("SetParam_Technique", "0")
    env.ok("SetParam_MA", "1000")
    assert env.gen.technique.ma == 500
    assert env.ok("IncParam_MA").result == "500"  # the power ceiling stops the step


def test_steps_stay_on_the_tables_and_respect_limits(env: GenEnv) -> None:
    for name in ("KV", "MA", "MS", "MAS"):
        for _ in range(30):
            env.ok(f"IncParam_{name}", "3")
        for _ in range(30):
            env.ok(f"DecParam_{name}", "2")
        t = env.gen.technique
        assert t.kv in TABLES.kv and t.ma in TABLES.ma and env.gen.feasible(t)


def test_modes_keep_ma_ms_mas_consistent(env: GenEnv) -> None:
    env.ok("SetParam_MA", "200")
    env.ok("SetParam_MS", "63")
    assert env.ok("GetParam_MAS").result == "12.6"
    assert env.ok("SetParam_Technique", "1").result == "1"
    t = env.gen.technique
    assert t.mas in TABLES.mas and t.mas == 12.5 and t.ms == 62.5
    assert env.ok("SetParam_MAS", "20").result == "20"
    assert env.gen.technique.ms == 100 and env.gen.technique.ma == 200
    assert env.ok("SetParam_MS", "160").result == "160"  # mode 1: ms reached through mAs
    assert env.gen.technique.mas == 32
    # 0.1 mAs at 200 mA would need 0.5 ms: the smallest mAs the 1 ms minimum allows is taken
    assert env.ok("SetParam_MAS", "0.1").result == "0.2"
    assert env.ok("SetParam_Technique", "0").result == "0"
    t = env.gen.technique
    assert t.ms in TABLES.ms and t.mas == pytest.approx(t.ma * t.ms / 1000)


def test_random_command_sequences_keep_the_technique_valid(env: GenEnv) -> None:
    rng = random.Random(11)
    names = ["KV", "MA", "MS", "MAS", "Focus", "Technique"]
    for _ in range(250):
        param = rng.choice(names)
        kind = rng.choice(["Set", "Inc", "Dec"])
        if kind == "Set":
            value = {"KV": lambda: rng.uniform(40, 150), "MA": lambda: rng.uniform(10, 1000),
                     "MS": lambda: 10 ** rng.uniform(0, 4), "MAS": lambda: 10 ** rng.uniform(-1, 3),
                     "Focus": lambda: rng.randint(0, 1), "Technique": lambda: rng.randint(0, 2)}[param]()
            text = f"{value:.5g}"
        else:
            text = str(rng.randint(1, 4))
        reply = env.call(f"{kind}Param_{param}", text)
        assert reply.code in (SUCCESS.hex, OUT_OF_RANGE.hex), reply.description
        t = env.gen.technique
        assert env.gen.feasible(t), t
        assert t.kv in TABLES.kv and t.ma in TABLES.ma
        assert t.kv * t.ma / 1000 <= 80 and t.ma <= (400, 1000)[t.focus]
        if t.mode == 0:
            assert t.ms in TABLES.ms and t.mas == pytest.approx(t.ma * t.ms / 1000, rel=1e-3)
        else:
            assert t.mas in TABLES.mas and t.ms == pytest.approx(t.mas * 1000 / t.ma, rel=1e-3)
        assert env.model.technique == t


def test_power_and_focus_coupling(env: GenEnv) -> None:
    scenario_power_and_focus_coupling(env)


# --- error codes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "param"), [
    ("SetParam_KV", "abc"), ("SetParam_KV", ""), ("SetParam_KV", "   "), ("SetParam_KV", "nan"),
    ("SetParam_KV", "inf"), ("SetParam_MA", "1e"), ("SetParam_MS", "0x10"), ("SetParam_MAS", "NaN"),
    ("SetParam_Focus", "2"), ("SetParam_Focus", "MEDIUM"), ("SetParam_AECField", "01"),
    ("SetParam_AECField", "0101"), ("SetParam_AECField", "0a0"), ("SetParam_AECField", ""),
    ("SetParam_AECDensity", "2.5"), ("SetParam_AECDensity", "x"), ("SetParam_Technique", "3"),
    ("SetParam_Technique", "manual"), ("IncParam_KV", "x"), ("DecParam_MA", "1.5"),
])
def test_bad_parameters(env: GenEnv, name: str, param: str) -> None:
    env.fails(name, param, BAD_PARAMETER)


@pytest.mark.parametrize(("name", "param"), [
    ("SetParam_KV", "39"), ("SetParam_KV", "150.5"), ("SetParam_KV", "-70"), ("SetParam_MA", "1001"),
    ("SetParam_MA", "9"), ("SetParam_MS", "0.5"), ("SetParam_MS", "20000"), ("SetParam_MAS", "0.05"),
    ("SetParam_MAS", "1200"), ("SetParam_AECDensity", "6"), ("SetParam_AECDensity", "-6"),
    ("SetParam_AECField", "000"), ("IncParam_KV", "0"), ("DecParam_KV", "-2"), ("IncParam_MS", "5000"),
])
def test_out_of_range(env: GenEnv, name: str, param: str) -> None:
    r = env.fails(name, param, OUT_OF_RANGE)
    assert "Parameter out of range" in r.description


def test_unknown_command_and_bus_keeps_serving(env: GenEnv) -> None:
    env.fails("SetParam_Colour", "red", UNKNOWN_COMMAND)
    env.fails("setparam_kv", "80", UNKNOWN_COMMAND)
    assert env.ok("GetParam_KV").result == "70"
    commands = env.ok("GetCommands").data["commands"]
    for x in ("KV", "MA", "MS", "MAS", "Focus", "AECField", "AECDensity", "Technique"):
        for verb in ("Get", "Set", "Inc", "Dec"):
            assert f"{verb}Param_{x}" in commands
    for c in ("GetStatus", "Prepare", "Expose", "Abort", "ResetError", "GetLimits", "Initialize"):
        assert c in commands


def test_get_limits_and_status(env: GenEnv) -> None:
    r = env.ok("GetLimits")
    assert r.data["limits"]["kv_max"] == 150 and r.data["limits"]["focus_ma_max"] == [400, 1000]
    assert r.data["tables"]["MA"][:3] == [10, 12.5, 16]
    s = env.ok("GetStatus")
    assert s.data["technique_name"] == "MA_MS" and s.data["backend"] == "Simulator"
    assert s.data["heat_percent"] == 0 and s.data["fault"] == ""


# --- faults --------------------------------------------------------------------------------------------
def test_interlock_fault_and_recovery(env: GenEnv) -> None:
    scenario_interlock_fault_and_recovery(env)


def test_interlock_opening_after_prepare_faults_the_exposure(env: GenEnv) -> None:
    env.ok("Prepare")
    env.wait_state(S.Ready)
    env.faults.inject("interlock_open")
    env.ok("Expose", tx="XI")
    env.wait_state(S.Error)
    assert env.wait_event(EventKind.FAULT, tx="XI").data["code"] == INTERLOCK_OPEN.hex
    assert env.shots == []
    env.fails("ResetError", "", INTERLOCK_OPEN)
    env.faults.clear()
    env.ok("ResetError")
    env.expose_cycle()


def test_overheat_refusal_and_recovery(env: GenEnv) -> None:
    scenario_overheat_refusal_and_recovery(env)


def test_timeout_fault_and_recovery(env: GenEnv) -> None:
    scenario_timeout_fault_and_recovery(env)


def test_dropped_reply_is_a_timeout_and_recovers(env: GenEnv) -> None:
    env.faults.inject("dropped_reply", count=1)
    r = env.call("SetParam_MA", "160", tx="DR")
    assert r.code == TIMEOUT.hex and env.gen.state is S.Error
    assert env.gen.technique.ma == 125  # the device does not trust an unconfirmed change
    env.ok("ResetError")  # re-sends the device's technique: generator and device agree again
    assert env.model.technique == env.gen.technique
    assert not env.faults.active("dropped_reply")


# --- heat ----------------------------------------------------------------------------------------------
def test_heat_accumulates_refuses_and_cools() -> None:
    # 20 kHU anode, 200 HU/s at full heat: tau = 100 s (5 s of wall time at scale 20). The
    # first shot heats the anode to about 94 %; the second prepare is refused while the
    # anode is above about 6 % (some 14 s of wall time), which a busy machine allows.
    e = GenEnv("sim", scale=20,
               limits=GeneratorLimits(heat_capacity_hu=20_000, cooling_hu_per_s=200)).connect()
    try:
        e.ok("SetParam_KV", "100")
        e.ok("SetParam_MA", "500")
        e.ok("SetParam_MS", "280")  # 140 mAs -> 18.9 kHU
        rec = e.expose_cycle("hot1")
        assert rec["heat_hu"] == pytest.approx(1.35 * rec["kv"] * rec["mas"], rel=1e-6)
        h1 = e.ok("GetStatus").data["heat_percent"]
        assert 40 < h1 <= 100 * rec["heat_hu"] / 20_000 + 0.01
        # the same shot again does not fit (94 % + 94 % > 100 %): the generator refuses the
        # prepare, not latched
        e.ok("Prepare", tx="hot2")
        ev = e.wait_event(EventKind.FAULT, tx="hot2")
        assert ev.data["code"] == TUBE_OVERHEAT.hex and ev.data["latched"] is False
        e.wait_state(S.Standby)
        assert e.gen.fault is None and len(e.shots) == 1
        h2 = e.ok("GetStatus").data["heat_percent"]
        assert h2 < h1  # cooling
        # a small exposure still fits
        e.ok("SetParam_MS", "10")
        e.expose_cycle("small")
        e.ok("SetParam_MS", "200")
        _wait_until(lambda: e.model.heat_percent() <= 30, 120)  # a few seconds
        e.expose_cycle("cooled")
        assert len(e.shots) == 3
    finally:
        e.close()


def test_heat_cools_exponentially_in_simulated_time() -> None:
    clock = SimClock(1000)
    sim = SimGeneratorBackend(clock, limits=GeneratorLimits(heat_capacity_hu=100_000, cooling_hu_per_s=1000))
    sim.model.add_heat(50_000)
    t0, h0 = clock.now(), sim.model.heat_hu()
    time.sleep(0.05)
    t1, h1 = clock.now(), sim.model.heat_hu()
    assert h1 == pytest.approx(h0 * 2.718281828 ** (-(t1 - t0) / 100), rel=0.02)
    assert h1 < h0


def test_aec_terminates_on_the_chamber_dose(env: GenEnv) -> None:
    env.ok("SetParam_KV", "80")
    env.ok("SetParam_MA", "250")
    env.ok("SetParam_Technique", "2")
    env.ok("SetParam_MAS", "100")  # backup mAs
    rec0 = env.expose_cycle("aec0")
    assert rec0["terminated_by_aec"] is True and rec0["mas"] < 100
    env.ok("SetParam_AECDensity", "2")
    rec2 = env.expose_cycle("aec2")
    assert rec2["mas"] / rec0["mas"] == pytest.approx(1.25 ** 2, rel=0.05)
    env.ok("SetParam_AECField", "101")  # lung chambers: less attenuation
    rec_l = env.expose_cycle("aecl")
    assert rec_l["mas"] < rec2["mas"]
    env.ok("SetParam_MAS", "2")  # a backup below the needed dose ends the exposure
    rec_b = env.expose_cycle("aecb")
    assert rec_b["terminated_by_aec"] is False and rec_b["mas"] == pytest.approx(2, rel=0.05)


def test_dap_grows_with_kv_and_mas(env: GenEnv) -> None:
    env.ok("SetParam_MS", "100")
    d1 = env.expose_cycle("d1")["dap_dgycm2"]
    env.ok("SetParam_MS", "200")
    d2 = env.expose_cycle("d2")["dap_dgycm2"]
    env.ok("SetParam_KV", "100")
    d3 = env.expose_cycle("d3")["dap_dgycm2"]
    assert d2 == pytest.approx(2 * d1, rel=0.05)
    assert d3 == pytest.approx(d2 * (100 / 70) ** 2, rel=0.05)


# --- the device never trusts the backend blindly -----------------------------------------------------------
def test_job_crash_is_a_fault(env: GenEnv) -> None:
    class Boom(RuntimeError):
        pass

    def crash(cancel: threading.Event) -> None:
        raise Boom("rotor controller bug")

    env.sim.prepare = crash  # type: ignore[method-assign]
    env.ok("Prepare", tx="crash")
    env.wait_state(S.Error)
    assert env.wait_event(EventKind.FAULT, tx="crash").data["code"] == "0x0F0001"


def test_status_strings_are_the_seeds() -> None:
    assert isinstance(S.Standby, Enum)
    gen = Generator(GENERATOR, DeviceBus().hub, SimGeneratorBackend(SimClock(100)))
    assert gen.status_string == "GENERATOR_STATUS_INIT"
    assert dataclasses.is_dataclass(gen.technique)


# --- aborts the device did not ask for, and aborts the generator refuses ---------------------------
def _wait_until(cond, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.001)


def scenario_generator_aborts_on_its_own(env: GenEnv) -> None:
    """The generator aborts a prepare and an exposure by itself (its console's abort key):
    the device returns to Standby with a non-latched ABORTED fault, then works on."""
    env.ok("SetParam_KV", "60")
    env.ok("SetParam_MA", "100")
    env.ok("SetParam_MS", "10000")
    with env.slow_prepare():
        env.ok("Prepare", tx="P1")
        _wait_until(lambda: env.model.preparing)
        env.model.abort()
    env.wait_state(S.Standby)
    fault = env.wait_event(EventKind.FAULT, tx="P1")
    assert fault.data["code"] == ABORTED.hex and fault.data["latched"] is False
    assert env.gen.fault is None
    env.ok("Prepare", tx="P2")
    env.wait_state(S.Ready)
    env.ok("Expose", tx="X1")
    _wait_until(lambda: env.model.exposing)
    env.model.abort()
    env.wait_state(S.Standby)
    assert env.wait_event(EventKind.FAULT, tx="X1").data["code"] == ABORTED.hex
    assert env.wait_event(EventKind.EXPOSURE, tx="X1").data["aborted"] is True
    env.ok("SetParam_MS", "100")
    env.expose_cycle()


def test_generator_aborting_on_its_own_is_a_refusal() -> None:
    e = GenEnv(scale=1).connect()  # the 10 s exposure lasts 10 s of wall time (aborted)
    try:
        scenario_generator_aborts_on_its_own(e)
    finally:
        e.close()


def test_refused_abort_leaves_the_state_and_the_job_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    e = GenEnv(scale=5).connect()
    try:
        def refuse() -> None:
            raise DiosError(BUSY, "abort not possible now")

        monkeypatch.setattr(e.sim, "abort", refuse)
        with e.slow_prepare():
            e.ok("Prepare")
            assert e.call("Abort").code == BUSY.hex
            assert e.gen.state is S.Preparation
            e.wait_state(S.Ready)  # the prepare went on
        assert e.call("Abort").code == BUSY.hex
        assert e.gen.state is S.Ready and e.model.prepared
        monkeypatch.undo()
        e.ok("Abort")
        assert e.gen.state is S.Standby and not e.model.prepared
        assert not [ev for ev in e.events() if ev.kind == EventKind.FAULT]
    finally:
        e.close()


def test_abort_failing_on_the_link_latches_error(monkeypatch: pytest.MonkeyPatch) -> None:
    e = GenEnv(scale=5).connect()
    try:
        e.ok("Prepare")
        e.faults.inject("comm_timeout")
        assert e.call("Abort").code == TIMEOUT.hex
        assert e.gen.state is S.Error
        assert not e.gen.job_running
        e.faults.clear("comm_timeout")
        e.ok("ResetError")
        e.expose_cycle()
    finally:
        e.close()
