"""The generator through the real serial driver: pty pair and TCP socket against the wire simulator.

The key device scenarios of ``test_generator_device`` run unchanged through
:class:`drivers.generator_serial.SerialGeneratorBackend`; the protocol codec is fuzzed
with garbage, bad checksums and truncated frames, on its own and on a live link.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from dios.clock import SimClock
from dios.codes import (
    BAD_PARAMETER,
    COMM_LOST,
    OUT_OF_RANGE,
    SUCCESS,
    TIMEOUT,
    UNKNOWN_COMMAND,
    WRONG_STATE,
    DiosError,
    all_codes,
)
from dios.devices.backends import ExposureRecord, GeneratorLimits, GeneratorReadback, Technique
from dios.devices.generator import GeneratorState
from dios.messages import EventKind
from drivers.generator_protocol import (
    ETX,
    EVENT,
    MAX_PAYLOAD,
    NAK_CODES,
    REPLY,
    REQUEST,
    STX,
    FrameDecoder,
    Message,
    ProtocolError,
    checksum,
    decode_payload,
    encode,
    limits_fields,
    limits_from,
    nak_code,
    readback_fields,
    readback_from,
    record_fields,
    record_from,
    result_code,
    technique_fields,
    technique_from,
)
from drivers.generator_serial import SerialGeneratorBackend
from simulators.generator import SimGeneratorBackend
from simulators.generator_wire import MODEL_NAME, GeneratorWireServer
from tests.test_generator_device import (
    GenEnv,
    scenario_abort_during_preparation_and_exposure,
    scenario_exposure_cycle,
    scenario_generator_aborts_on_its_own,
    scenario_interlock_fault_and_recovery,
    scenario_overheat_refusal_and_recovery,
    scenario_power_and_focus_coupling,
    scenario_timeout_fault_and_recovery,
)

S = GeneratorState
TRANSPORTS = ["pty", "tcp"]


@pytest.fixture(params=TRANSPORTS)
def wenv(request: pytest.FixtureRequest) -> Iterator[GenEnv]:
    e = GenEnv(request.param).connect()
    yield e
    e.close()


def _frame(payload: bytes) -> bytes:
    return bytes([STX]) + payload + bytes([ETX]) + checksum(payload)


# --- device scenarios over the wire ----------------------------------------------------------------
def test_exposure_cycle_over_the_wire(wenv: GenEnv) -> None:
    assert wenv.gen.backend.name == "SerialGenerator"
    assert wenv.backend.model == MODEL_NAME
    scenario_exposure_cycle(wenv)
    assert wenv.server.requests >= 8
    assert wenv.backend.protocol_error_count == 0 and not wenv.server.errors


def test_power_and_focus_coupling_over_the_wire(wenv: GenEnv) -> None:
    scenario_power_and_focus_coupling(wenv)
    assert wenv.model.technique == wenv.gen.technique


def test_interlock_fault_and_recovery_over_the_wire(wenv: GenEnv) -> None:
    scenario_interlock_fault_and_recovery(wenv)


def test_overheat_refusal_and_recovery_over_the_wire(wenv: GenEnv) -> None:
    scenario_overheat_refusal_and_recovery(wenv)


def test_timeout_fault_and_recovery_over_the_wire(wenv: GenEnv) -> None:
    scenario_timeout_fault_and_recovery(wenv)
    assert wenv.server.ignored >= 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_abort_over_the_wire(transport: str) -> None:
    e = GenEnv(transport, scale=5).connect()
    try:
        scenario_abort_during_preparation_and_exposure(e)
    finally:
        e.close()


def test_dropped_reply_is_retried_when_safe(wenv: GenEnv) -> None:
    wenv.faults.inject("dropped_reply", count=1)
    r = wenv.ok("SetParam_KV", "95")
    assert r.result == "95" and wenv.model.technique.kv == 95
    assert wenv.server.dropped == 1
    assert wenv.backend.attempts > wenv.backend.requests
    assert wenv.gen.state is S.Standby


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_dropped_reply_without_retries_is_a_timeout(transport: str) -> None:
    e = GenEnv(transport, retries=0, timeout=0.15).connect()
    try:
        e.faults.inject("dropped_reply", count=1)
        r = e.call("SetParam_MA", "160", tx="DR")
        assert r.code == TIMEOUT.hex and e.gen.state is S.Error
        assert e.wait_event(EventKind.FAULT, tx="DR").data["code"] == TIMEOUT.hex
        e.ok("ResetError")
        assert e.model.technique == e.gen.technique
        e.expose_cycle()
    finally:
        e.close()


def test_expose_is_never_repeated(wenv: GenEnv) -> None:
    wenv.ok("Prepare")
    wenv.wait_state(S.Ready)
    wenv.faults.inject("dropped_reply", count=1)
    wenv.ok("Expose", tx="X1")  # the device replies at once; the job meets the lost reply
    wenv.wait_state(S.Error)
    assert wenv.wait_event(EventKind.FAULT, tx="X1").data["code"] == TIMEOUT.hex
    assert wenv.model.exposures == 1 and len(wenv.shots) == 1
    wenv.ok("ResetError")
    wenv.expose_cycle()
    assert wenv.model.exposures == 2


def test_lost_link_is_comm_lost_and_reset_reconnects() -> None:
    e = GenEnv("tcp").connect()
    try:
        e.server.drop_client()
        deadline = time.monotonic() + 5
        while e.backend.connected:
            assert time.monotonic() < deadline, "driver never noticed the closed socket"
            time.sleep(0.005)
        r = e.call("SetParam_KV", "90", tx="CL")
        assert r.code == COMM_LOST.hex and e.gen.state is S.Error
        assert e.wait_event(EventKind.FAULT, tx="CL").data["code"] == COMM_LOST.hex
        assert e.ok("GetStatus").data["readback_error"] == COMM_LOST.hex
        e.ok("ResetError")
        assert e.backend.connected and e.gen.state is S.Standby
        e.expose_cycle()
    finally:
        e.close()


# --- the driver's error mapping ---------------------------------------------------------------------
@pytest.fixture(params=TRANSPORTS)
def link(request: pytest.FixtureRequest) -> Iterator[tuple[SerialGeneratorBackend, GeneratorWireServer]]:
    sim = SimGeneratorBackend(SimClock(200))
    server = GeneratorWireServer(sim, request.param).start()
    drv = SerialGeneratorBackend(server.url, timeout=0.25, retries=1)
    drv.connect()
    yield drv, server
    drv.close()
    server.stop()


def _code_of(fn: object, *args: object) -> str:
    with pytest.raises(DiosError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.code.name


def test_nak_codes_map_to_result_codes(link: tuple[SerialGeneratorBackend, GeneratorWireServer]) -> None:
    drv, server = link
    assert _code_of(drv.apply, Technique(kv=200)) == OUT_OF_RANGE.name
    assert _code_of(drv.apply, Technique(kv=150, ma=800, ms=10, mas=8)) == OUT_OF_RANGE.name
    assert _code_of(drv.apply, Technique(mas=99)) == BAD_PARAMETER.name
    assert _code_of(drv.expose, threading.Event()) == WRONG_STATE.name
    assert _code_of(drv.transact, "ZZ") == UNKNOWN_COMMAND.name
    assert _code_of(drv.transact, "TS", {"KV": "70"}) == BAD_PARAMETER.name
    assert drv.technique() == Technique()  # nothing refused was taken
    server.faults.inject("interlock_open")
    assert _code_of(drv.prepare, threading.Event()) == "INTERLOCK_OPEN"
    assert _code_of(drv.reset) == "INTERLOCK_OPEN"
    assert drv.readback().interlock_closed is False
    server.faults.clear()
    drv.reset()
    drv.prepare(threading.Event())
    drv.prepare(threading.Event())  # a repeated prepare is answered without a second boost
    rec = drv.expose(threading.Event())
    assert rec.kv == pytest.approx(70, rel=0.03) and not rec.terminated_by_aec


def test_unsolicited_noise_on_the_line_is_reported_and_the_link_recovers(
        link: tuple[SerialGeneratorBackend, GeneratorWireServer]) -> None:
    drv, server = link
    good = encode(Message(EVENT, 9, "RDY"))
    bad_ck = bytearray(_frame(b"A05|ACK"))
    bad_ck[-1] = ord("0") if bad_ck[-1] != ord("0") else ord("1")
    server.send_raw(b"\x00\xffline noise" + bytes(bad_ck) + b"\x02A07|ACK|KV=7" + good
                    + b"\x02A0" + bytes([0x07]) + b"xx" + _frame(b"not a payload"))
    deadline = time.monotonic() + 5
    while drv.protocol_error_count < 5:
        assert time.monotonic() < deadline, list(drv.protocol_errors)
        time.sleep(0.005)
    text = " | ".join(drv.protocol_errors)
    for needle in ("garbage", "checksum mismatch", "truncated frame", "non-printable", "bad payload header"):
        assert needle in text, (needle, text)
    assert drv.readback().interlock_closed
    assert drv.apply(Technique(kv=66, ma=100, ms=20, mas=2)).kv == 66


def test_noise_sent_to_the_generator_is_ignored_and_it_keeps_answering() -> None:
    sim = SimGeneratorBackend(SimClock(200))
    with GeneratorWireServer(sim, "tcp") as server, socket.create_connection(("127.0.0.1", server.port), 2) as s:
        bad = bytearray(_frame(b"Q01|ID"))
        bad[-2] = ord("F") if bad[-2] != ord("F") else ord("E")
        s.sendall(b"\xfe\xfd garbage \x03\x02Q01|I" + bytes(bad) + b"\x02Q02|ST" + b"\x02" * 3
                  + b"A" * (MAX_PAYLOAD + 5) + encode(Message(REQUEST, 0x2A, "ID")))
        decoder, got = FrameDecoder(), []
        deadline = time.monotonic() + 5
        while not got:
            assert time.monotonic() < deadline
            if select.select([s], [], [], 0.05)[0]:
                got = [m for m in decoder.feed(s.recv(4096)) if isinstance(m, Message)]
        assert got[0].kind == REPLY and got[0].seq == 0x2A and got[0].name == "ACK"
        assert got[0].fields["MDL"] == MODEL_NAME
        assert server.requests == 1
        assert len(server.errors) >= 4


def test_spy_url_hexdumps_the_traffic(tmp_path: object) -> None:
    trace = f"{tmp_path}/spy.txt"
    sim = SimGeneratorBackend(SimClock(200))
    with GeneratorWireServer(sim, "pty") as server:
        drv = SerialGeneratorBackend(f"spy://{server.device_path}?file={trace}", timeout=0.25)
        drv.connect()
        try:
            drv.apply(Technique(kv=77))
            drv.prepare(threading.Event())
            assert drv.expose(threading.Event()).kv == pytest.approx(77, rel=0.03)
        finally:
            drv.close()
    dump = open(trace).read()
    assert "TX" in dump and "RX" in dump
    assert "Q01|ID" in dump and "ACK" in dump


def test_loop_url_hears_only_itself_and_times_out() -> None:
    drv = SerialGeneratorBackend("loop://", timeout=0.05, retries=0)
    with pytest.raises(DiosError) as exc:
        drv.connect()
    assert exc.value.code is TIMEOUT
    assert any("unexpected Q frame" in e for e in drv.protocol_errors)


def test_missing_port_is_comm_lost() -> None:
    drv = SerialGeneratorBackend("serial:///dev/nonexistent-generator-port", timeout=0.05)
    with pytest.raises(DiosError) as exc:
        drv.connect()
    assert exc.value.code is COMM_LOST and "nonexistent" in exc.value.detail
    with pytest.raises(DiosError) as exc:
        drv.readback()
    assert exc.value.code is COMM_LOST


# --- link settings ------------------------------------------------------------------------------------
def test_link_settings_default_to_the_drivers_usual_values() -> None:
    drv = SerialGeneratorBackend("loop://")
    assert (drv.baudrate, drv.timeout, drv.retries) == (19200, 0.5, 2)
    assert (drv.bytesize, drv.parity, drv.stopbits, drv.rtscts, drv.xonxoff) == (8, "N", 1, False, False)
    assert (drv.write_timeout, drv.poll_interval) == (1.0, 0.02)
    assert (drv.prep_timeout, drv.exposure_margin) == (5.0, 2.0)
    with pytest.raises(TypeError):
        SerialGeneratorBackend("loop://", 0.5)  # type: ignore[misc]  # keywords only


def test_link_settings_reach_the_port() -> None:
    drv = SerialGeneratorBackend("loop://", baudrate=9600, bytesize=7, parity="e", stopbits=2,
                                 xonxoff=True, write_timeout=0.5, poll_interval=0.05)
    drv._open()
    try:
        port = drv._port
        assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (9600, 7, "E", 2)
        assert port.xonxoff and not port.rtscts
        assert (port.write_timeout, port.timeout) == (0.5, 0.05)
    finally:
        drv.close()


def test_slow_lines_read_for_at_least_three_character_times() -> None:
    assert SerialGeneratorBackend("loop://", baudrate=300).poll_interval == pytest.approx(0.1)
    assert SerialGeneratorBackend("loop://", baudrate=300, poll_interval=0.5).poll_interval == 0.5


@pytest.mark.parametrize(("settings", "message"), [
    ({"baudrate": 0}, "baudrate must be between 50 and 4000000"),
    ({"baudrate": 19200.5}, "baudrate must be an integer"),
    ({"baudrate": True}, "baudrate must be an integer"),
    ({"timeout": 0}, "timeout must be a finite number of seconds > 0"),
    ({"timeout": float("inf")}, "timeout must be a finite number of seconds > 0"),
    ({"timeout": "1"}, "timeout must be a number of seconds"),
    ({"retries": -1}, "retries must be between 0 and 100"),
    ({"retries": 1.0}, "retries must be an integer"),
    ({"bytesize": 9}, "bytesize must be one of (5, 6, 7, 8)"),
    ({"parity": "X"}, "parity must be one of N, E, O, M, S"),
    ({"stopbits": 3}, "stopbits must be one of (1, 1.5, 2)"),
    ({"rtscts": 1}, "rtscts must be True or False"),
    ({"write_timeout": -1}, "write_timeout must be a finite number of seconds > 0"),
    ({"poll_interval": 0}, "poll_interval must be a finite number of seconds > 0"),
    ({"prep_timeout": float("nan")}, "prep_timeout must be a finite number of seconds > 0"),
    ({"exposure_margin": -0.1}, "exposure_margin must be a finite number of seconds >= 0"),
])
def test_bad_link_settings_are_refused_by_name(settings: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        SerialGeneratorBackend("loop://", **settings)
    assert message in str(exc.value)


def test_url_must_be_given() -> None:
    with pytest.raises(ValueError, match="url must be a pyserial URL"):
        SerialGeneratorBackend("")


def test_the_driver_takes_no_simulation_clock() -> None:
    with pytest.raises(TypeError):
        SerialGeneratorBackend("loop://", clock=SimClock(1000), timeout=0.3)  # type: ignore[call-arg]


# --- protocol codec ------------------------------------------------------------------------------------
def test_frame_layout_and_checksum() -> None:
    frame = encode(Message(REQUEST, 0x1F, "TS", {"KV": "70", "MA": "125"}))
    payload = b"Q1F|TS|KV=70|MA=125"
    assert frame == b"\x02" + payload + b"\x03" + b"%02X" % (sum(payload) % 256)
    assert FrameDecoder().feed(frame) == [Message(REQUEST, 0x1F, "TS", {"KV": "70", "MA": "125"})]


def test_field_mappings_round_trip() -> None:
    t = Technique(kv=81, ma=250, ms=12.5, mas=3.125, mode=1, focus=0, aec_field="101", aec_density=-2)
    assert technique_from(Message(REPLY, 1, "ACK", technique_fields(t))) == t
    r = ExposureRecord(80.1, 199.5, 50.02, 9.979, 1, 5.6, 1079.1, True, 12.5)
    assert record_from(Message(EVENT, 1, "XD", record_fields(r))) == r
    lim = GeneratorLimits(kv_max=125, focus_ma_max=(320, 800))
    assert limits_from(Message(REPLY, 1, "ACK", limits_fields(lim))) == lim
    rb = GeneratorReadback(False, 1234.5, 4.1, "INTERLOCK_OPEN")
    assert readback_from(Message(REPLY, 1, "ACK", readback_fields(rb, "IDLE"))) == rb
    with pytest.raises(ProtocolError, match="KV"):
        technique_from(Message(REPLY, 1, "ACK", {**technique_fields(t), "KV": "x"}))
    with pytest.raises(ProtocolError, match="AF"):
        technique_from(Message(REPLY, 1, "ACK", {**technique_fields(t), "AF": "2"}))


def test_nak_code_table() -> None:
    for nak, code in NAK_CODES.items():
        assert result_code(nak) is code
        assert result_code(nak_code(code)) is code
    assert result_code("99").name == "DEVICE_FAULT"
    assert nak_code(all_codes()[0]) == "12"  # SUCCESS has no NAK: hardware fault


@pytest.mark.parametrize(("data", "reason"), [
    (b"junk" + _frame(b"A02|ACK"), "garbage"),
    (b"\x02A01|ACK\x0399" + _frame(b"A02|ACK"), "checksum mismatch"),
    (b"\x02A01|AC" + _frame(b"A02|ACK"), "truncated frame"),
    (b"\x02A01|\x01ACK\x03" + _frame(b"A02|ACK"), "non-printable"),
    (b"\x02A01|ACK\x03z1" + _frame(b"A02|ACK"), "bad checksum character"),
    (b"\x02A01|ACK\x03" + _frame(b"A02|ACK"), "checksum missing"),
    (b"\x02\x03" + _frame(b"A02|ACK"), "empty frame"),
    (b"\x02" + b"B" * (MAX_PAYLOAD + 1) + _frame(b"A02|ACK"), "longer than"),
    (_frame(b"X01|ACK") + _frame(b"A02|ACK"), "bad payload header"),
    (_frame(b"A01|ACK|KV") + _frame(b"A02|ACK"), "bad field"),
    (_frame(b"A01|ACK|KV=1|KV=2") + _frame(b"A02|ACK"), "repeated"),
    (_frame(b"A01|a") + _frame(b"A02|ACK"), "name"),
])
def test_decoder_reports_bad_bytes_and_resyncs(data: bytes, reason: str) -> None:
    out = FrameDecoder().feed(data)
    errors = [o for o in out if isinstance(o, ProtocolError)]
    assert errors and reason in str(errors[0]), out
    assert out[-1] == Message(REPLY, 2, "ACK")


def test_decoder_handles_byte_by_byte_input_and_reports_a_dangling_frame() -> None:
    dec = FrameDecoder()
    data = encode(Message(EVENT, 3, "XD", {"KV": "80"})) + b"\x02A04|AC"
    out = [m for b in data for m in dec.feed(bytes([b]))]
    assert out == [Message(EVENT, 3, "XD", {"KV": "80"})]
    assert dec.partial
    tail = dec.flush()
    assert len(tail) == 1 and "truncated frame" in str(tail[0]) and not dec.partial


def test_encoder_refuses_what_the_protocol_cannot_carry() -> None:
    for msg, reason in [
        (Message("X", 1, "ID"), "type"), (Message(REQUEST, 256, "ID"), "sequence"),
        (Message(REQUEST, 1, "id"), "name"), (Message(REQUEST, 1, "TS", {"kv": "1"}), "key"),
        (Message(REQUEST, 1, "TS", {"KV": "1|2"}), "cannot carry"),
        (Message(REQUEST, 1, "TS", {"KV": "é"}), "cannot carry"),
        (Message(REQUEST, 1, "TS", {"TXT": "x" * MAX_PAYLOAD}), "exceeds"),
    ]:
        with pytest.raises(ValueError, match=reason):
            encode(msg)
    with pytest.raises(ProtocolError, match="ASCII"):
        decode_payload("Q01|ID|TXT=é".encode())


def test_decoder_fuzz_never_raises_and_keeps_every_valid_frame() -> None:
    rng = random.Random(5)
    dec = FrameDecoder()
    sent: list[Message] = []
    stream = bytearray()
    for i in range(400):
        noise = bytes(rng.choice([0x02, 0x03, 0x41, 0x7C, 0x30, 0xFF, 0x00, rng.randrange(256)])
                      for _ in range(rng.randrange(0, 12)))
        stream += noise
        msg = Message(rng.choice([REPLY, EVENT]), i % 256, rng.choice(["ACK", "NAK", "XD", "RDY"]),
                      {"KV": f"{rng.uniform(40, 150):.4g}"})
        sent.append(msg)
        stream += encode(msg)
    got: list[Message] = []
    errors = 0
    pos = 0
    while pos < len(stream):
        n = rng.randrange(1, 40)
        for item in dec.feed(bytes(stream[pos:pos + n])):
            if isinstance(item, ProtocolError):
                errors += 1
            else:
                got.append(item)
        pos += n
    it = iter(got)
    assert all(any(m == g for g in it) for m in sent)  # every sent frame, in order
    assert errors > 100
    assert dec.errors == errors and dec.frames == len(got)


def test_all_nak_codes_are_result_codes() -> None:
    known = {c.name for c in all_codes()}
    assert {c.name for c in NAK_CODES.values()} <= known
    assert SUCCESS.hex == "0x000000"


# --- operations are numbered: late events of an earlier operation are dropped ------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_generator_aborting_on_its_own_over_the_wire(transport: str) -> None:
    e = GenEnv(transport, scale=5).connect()
    try:
        scenario_generator_aborts_on_its_own(e)
    finally:
        e.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_late_fault_of_an_earlier_prepare_is_dropped(transport: str) -> None:
    # scale 2: a prepare takes 400 ms, time enough to slip a stale FLT in while it runs
    e = GenEnv(transport, scale=2).connect()
    try:
        e.ok("Prepare", tx="P")
        deadline = time.monotonic() + 5
        while not e.model.preparing:  # PR received: the driver is waiting for its event
            assert time.monotonic() < deadline
            time.sleep(0.001)
        stale = Message(EVENT, 0x42, "FLT", {"CODE": "13", "TXT": "prepare aborted", "OP": "9999"})
        e.server.send_raw(encode(stale))
        e.wait_state(S.Ready)
        assert e.backend.stale_events == 1
        assert not [ev for ev in e.events() if ev.kind == EventKind.FAULT]
        e.ok("Expose", tx="X")
        assert e.wait_event(EventKind.EXPOSURE, tx="X").data["record"]["kv"] > 0
    finally:
        e.close()


def test_prepare_and_expose_acks_and_events_carry_the_operation_number() -> None:
    e = GenEnv("pty").connect()
    try:
        b: SerialGeneratorBackend = e.backend
        first = b.transact("PR").get("OP")
        assert first.isdigit()
        assert b.transact("PR").get("OP") == first  # repeated while preparing or prepared
        ops = set()
        deadline = time.monotonic() + 5
        while not ops:
            assert time.monotonic() < deadline
            try:
                item = b._events.get(timeout=0.05)
            except Exception:  # noqa: BLE001 - queue.Empty
                continue
            ops.add((item.name, item.get("OP")))
        assert ops == {("RDY", first)}
        second = b.transact("EX", retry=False).get("OP")
        assert second.isdigit() and int(second) > int(first)
    finally:
        e.close()
