"""The generator wire protocol: framed ASCII over a serial line or TCP socket.

Like the serial protocols of high-frequency generators, every message travels in a frame
with start and end bytes and a checksum; the host asks, the generator answers each
request once, and reports the end of long operations with unsolicited event frames.

Frame
-----
::

    STX  payload  ETX  CK1 CK2
    0x02 1..240   0x03 two upper-case hex digits

``payload`` holds printable ASCII only (0x20..0x7E). The checksum is the sum of the
payload bytes modulo 256, written as two upper-case hex digits (``"7F"``).

Payload
-------
::

    <type><seq>|<name>[|<KEY>=<value>]...

* ``type``: ``Q`` request (host to generator), ``A`` reply, ``E`` event.
* ``seq``: two upper-case hex digits. A request carries the host's counter; the reply
  echoes it, so a late reply to an abandoned request is recognised and dropped. Events
  carry the generator's own counter.
* ``name``: a request command, ``ACK``/``NAK`` in replies, or an event name.
* fields: ``KEY`` is 2-4 upper-case letters; ``value`` is printable ASCII without ``|``
  (may be empty; numbers are written with up to 6 significant digits).

Requests (all answered by ``ACK`` with the fields shown, or ``NAK``)
--------------------------------------------------------------------

==== ================ =============================================================
cmd  fields sent      ACK fields
==== ================ =============================================================
ID   -                ``MDL`` model, ``VER`` protocol version
LM   -                limits: ``KVL KVH MAL MAH MSL MSH QL QH PW FS FL HC CR``
TS   technique        technique as accepted: ``KV MA MS MAS MD FO AF AD``
TG   -                technique in force
PR   -                ``OP`` operation number (the ``RDY`` or ``FLT`` event follows)
EX   -                ``OP`` operation number (the ``XD`` or ``FLT`` event follows)
AB   -                -
RS   -                - (``NAK`` with the fault's code while its cause persists)
ST   -                ``IL`` interlock closed 1/0, ``HU`` heat units, ``HP`` heat %,
                      ``FT`` fault name (empty if none), ``ST`` IDLE/PREP/READY/EXP
==== ================ =============================================================

Technique fields: ``KV`` kV, ``MA`` mA, ``MS`` ms, ``MAS`` mAs, ``MD`` mode (0 mA/ms,
1 mAs, 2 AEC), ``FO`` focus (0 small, 1 large), ``AF`` AEC chambers (``010``), ``AD``
AEC density (-5..5). Limits: kV/mA/ms/mAs low and high, ``PW`` max power kW, ``FS``/``FL``
small/large focus mA ceiling, ``HC`` heat capacity HU, ``CR`` cooling HU/s.

``NAK`` fields: ``CODE`` two-digit :data:`NAK_CODES` code and ``TXT`` text.

Events
------
Every event ends one operation and carries that operation's ``OP`` number, the one
the ``ACK`` of its ``PR``/``EX`` gave (a repeated ``PR`` while preparing or prepared is
answered with the running or finished prepare's number). A host waits only for the events
of the operation it started, so a late ``FLT`` of an earlier, aborted operation is
recognised and dropped. A generator that sends no ``OP`` (older firmware) has its
events taken as they come.

* ``RDY``: preparation finished, the generator is ready to expose.
* ``XD``: exposure done, with the readback ``KV MA MS MAS FO DAP HU AEC`` (AEC 1 when the
  chambers terminated it) and ``TS`` (generator time, s).
* ``FLT``: a prepare or exposure failed: ``CODE``, ``TXT``; after an aborted exposure also
  the partial readback fields.

Errors and resynchronisation
----------------------------
The receiver (:class:`FrameDecoder`) reports every bad byte sequence as a
:class:`ProtocolError` (garbage between frames, a non-printable byte in a payload, a
frame that is too long, a new ``STX`` before ``ETX`` = truncated frame, bad checksum
characters, a checksum mismatch, a malformed payload) and resynchronises on the next
``STX``. A generator ignores frames it cannot decode (the host's timeout and retry cover
them); a host drops them and keeps waiting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dios.codes import (
    ABORTED,
    BAD_PARAMETER,
    BUSY,
    DEVICE_FAULT,
    INTERLOCK_OPEN,
    OUT_OF_RANGE,
    TUBE_OVERHEAT,
    UNKNOWN_COMMAND,
    WRONG_STATE,
    ResultCode,
)
from dios.devices.backends import ExposureRecord, GeneratorLimits, GeneratorReadback, Technique

STX = 0x02
ETX = 0x03
MAX_PAYLOAD = 240
VERSION = "1"

REQUEST, REPLY, EVENT = "Q", "A", "E"
COMMANDS = ("ID", "LM", "TS", "TG", "PR", "EX", "AB", "RS", "ST")
EVENTS = ("RDY", "XD", "FLT")

#: NAK code -> result code
NAK_CODES: dict[str, ResultCode] = {
    "02": BAD_PARAMETER,     # payload syntax
    "03": UNKNOWN_COMMAND,
    "04": BAD_PARAMETER,
    "05": OUT_OF_RANGE,
    "06": WRONG_STATE,
    "07": BUSY,
    "10": INTERLOCK_OPEN,
    "11": TUBE_OVERHEAT,
    "12": DEVICE_FAULT,
    "13": ABORTED,
}
_NAK_OF_CODE = {code: nak for nak, code in NAK_CODES.items() if nak != "02"}

_NAME = re.compile(r"^[A-Z]{2,4}$")
_KEY = re.compile(r"^[A-Z]{2,4}$")
_SEQ = re.compile(r"^[0-9A-F]{2}$")


class ProtocolError(Exception):
    """A frame or payload that violates the protocol; ``raw`` holds the bytes concerned."""

    def __init__(self, reason: str, raw: bytes = b"") -> None:
        self.reason = reason
        self.raw = bytes(raw[:64])
        super().__init__(reason + (f" (bytes {self.raw!r})" if raw else ""))


@dataclass(frozen=True)
class Message:
    """One decoded payload."""

    kind: str  # Q, A or E
    seq: int
    name: str
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)

    def number(self, key: str) -> float:
        """The numeric field ``key``; ProtocolError if missing or not a finite number."""
        text = self.fields.get(key)
        try:
            value = float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ProtocolError(f"{self.name}: field {key} missing or not a number: {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ProtocolError(f"{self.name}: field {key} not finite: {text!r}")
        return value


def checksum(payload: bytes) -> bytes:
    """The two checksum characters of ``payload``."""
    return b"%02X" % (sum(payload) & 0xFF)


def num(value: float) -> str:
    """A number as the protocol writes it."""
    return f"{value:.6g}"


def clean_text(text: str, limit: int = 80) -> str:
    """``text`` made safe as a field value (printable, no ``|``), at most ``limit`` chars."""
    out = "".join(c if 0x20 <= ord(c) <= 0x7E and c != "|" else "?" for c in text)
    return out[:limit]


def encode(msg: Message) -> bytes:
    """The frame of ``msg``; ValueError if it cannot be represented."""
    if msg.kind not in (REQUEST, REPLY, EVENT):
        raise ValueError(f"bad message type {msg.kind!r}")
    if not 0 <= msg.seq <= 0xFF:
        raise ValueError(f"sequence {msg.seq} outside 0..255")
    if not _NAME.match(msg.name):
        raise ValueError(f"bad message name {msg.name!r}")
    parts = [f"{msg.kind}{msg.seq:02X}", msg.name]
    for key, value in msg.fields.items():
        value = str(value)
        if not _KEY.match(key):
            raise ValueError(f"bad field key {key!r}")
        if "|" in value or any(not 0x20 <= ord(c) <= 0x7E for c in value):
            raise ValueError(f"field {key} has characters the protocol cannot carry: {value!r}")
        parts.append(f"{key}={value}")
    payload = "|".join(parts).encode("ascii")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return bytes([STX]) + payload + bytes([ETX]) + checksum(payload)


def decode_payload(payload: bytes) -> Message:
    """Parse a payload (checksum already verified); ProtocolError if malformed."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("payload is not ASCII", payload) from None
    parts = text.split("|")
    head = parts[0]
    if len(head) != 3 or head[0] not in (REQUEST, REPLY, EVENT) or not _SEQ.match(head[1:]):
        raise ProtocolError(f"bad payload header {head[:8]!r} (want Q/A/E and two hex digits)", payload)
    if len(parts) < 2 or not _NAME.match(parts[1]):
        raise ProtocolError("missing or bad message name", payload)
    fields: dict[str, str] = {}
    for item in parts[2:]:
        key, sep, value = item.partition("=")
        if not sep or not _KEY.match(key):
            raise ProtocolError(f"bad field {item[:16]!r} (want KEY=value)", payload)
        if key in fields:
            raise ProtocolError(f"field {key} repeated", payload)
        fields[key] = value
    return Message(head[0], int(head[1:], 16), parts[1], fields)


class FrameDecoder:
    """Stream decoder: feed bytes, get messages and protocol errors in arrival order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_frame = False
        self._ck = bytearray()
        self._after_etx = False
        self._garbage = bytearray()
        self.frames = 0
        self.errors = 0

    def _error(self, out: list, reason: str, raw: bytes = b"") -> None:
        self.errors += 1
        out.append(ProtocolError(reason, raw))

    def _flush_garbage(self, out: list) -> None:
        if self._garbage:
            self._error(out, f"{len(self._garbage)} garbage byte(s) outside a frame", bytes(self._garbage))
            self._garbage.clear()

    def _start(self) -> None:
        self._buf.clear()
        self._ck.clear()
        self._in_frame = True
        self._after_etx = False

    def _idle(self) -> None:
        self._buf.clear()
        self._ck.clear()
        self._in_frame = False
        self._after_etx = False

    def feed(self, data: bytes) -> list[Message | ProtocolError]:
        """Consume ``data``; return the complete messages and the errors found."""
        out: list[Message | ProtocolError] = []
        for b in data:
            if not self._in_frame:
                if b == STX:
                    self._flush_garbage(out)
                    self._start()
                else:
                    self._garbage.append(b)
                continue
            if self._after_etx:
                if b == STX:
                    self._error(out, "frame cut after ETX: checksum missing", bytes(self._buf))
                    self._start()
                    continue
                if b not in b"0123456789ABCDEF":
                    self._error(out, f"bad checksum character 0x{b:02X}", bytes(self._buf))
                    self._idle()
                    continue
                self._ck.append(b)
                if len(self._ck) == 2:
                    payload = bytes(self._buf)
                    want = checksum(payload)
                    if bytes(self._ck) != want:
                        self._error(out, f"checksum mismatch: frame says {self._ck.decode()}, "
                                    f"payload sums to {want.decode()}", payload)
                    else:
                        try:
                            out.append(decode_payload(payload))
                            self.frames += 1
                        except ProtocolError as err:
                            self.errors += 1
                            out.append(err)
                    self._idle()
                continue
            if b == ETX:
                if not self._buf:
                    self._error(out, "empty frame")
                    self._idle()
                else:
                    self._after_etx = True
            elif b == STX:
                self._error(out, f"truncated frame: new STX after {len(self._buf)} byte(s) without ETX",
                            bytes(self._buf))
                self._start()
            elif not 0x20 <= b <= 0x7E:
                self._error(out, f"non-printable byte 0x{b:02X} in payload", bytes(self._buf))
                self._idle()
            elif len(self._buf) >= MAX_PAYLOAD:
                self._error(out, f"frame longer than {MAX_PAYLOAD} bytes", bytes(self._buf))
                self._idle()
            else:
                self._buf.append(b)
        if len(self._garbage) >= 64:
            self._flush_garbage(out)
        return out

    def flush(self) -> list[ProtocolError]:
        """Report and discard any partial frame or pending garbage (e.g. after a timeout)."""
        out: list = []
        self._flush_garbage(out)
        if self._in_frame:
            self._error(out, f"truncated frame: {len(self._buf)} byte(s) and no end", bytes(self._buf))
            self._idle()
        return out

    @property
    def partial(self) -> bool:
        """True while a frame has started but not ended."""
        return self._in_frame or bool(self._garbage)


# --- NAK codes -------------------------------------------------------------------------------
def nak_code(code: ResultCode) -> str:
    """The NAK code for a result code (``12`` hardware fault when there is no closer one)."""
    return _NAK_OF_CODE.get(code, "12")


def result_code(nak: str) -> ResultCode:
    """The result code of a NAK code (unknown codes are ``DEVICE_FAULT``)."""
    return NAK_CODES.get(nak, DEVICE_FAULT)


# --- field mappings ----------------------------------------------------------------------------
def technique_fields(t: Technique) -> dict[str, str]:
    return {"KV": num(t.kv), "MA": num(t.ma), "MS": num(t.ms), "MAS": num(t.mas),
            "MD": str(t.mode), "FO": str(t.focus), "AF": t.aec_field, "AD": str(t.aec_density)}


def _int_field(msg: Message, key: str) -> int:
    text = msg.fields.get(key, "")
    if not re.fullmatch(r"[+-]?\d{1,3}", text):
        raise ProtocolError(f"{msg.name}: field {key} missing or not an integer: {text!r}")
    return int(text)


def technique_from(msg: Message) -> Technique:
    af = msg.get("AF")
    if not re.fullmatch(r"[01]{3}", af):
        raise ProtocolError(f"{msg.name}: field AF must be three 0/1 characters: {af!r}")
    return Technique(kv=msg.number("KV"), ma=msg.number("MA"), ms=msg.number("MS"),
                     mas=msg.number("MAS"), mode=_int_field(msg, "MD"), focus=_int_field(msg, "FO"),
                     aec_field=af, aec_density=_int_field(msg, "AD"))


def record_fields(r: ExposureRecord) -> dict[str, str]:
    return {"KV": num(r.kv), "MA": num(r.ma), "MS": num(r.ms), "MAS": num(r.mas),
            "FO": str(r.focus), "DAP": num(r.dap_dgycm2), "HU": num(r.heat_hu),
            "AEC": "1" if r.terminated_by_aec else "0", "TS": num(r.timestamp)}


def record_from(msg: Message) -> ExposureRecord:
    return ExposureRecord(kv=msg.number("KV"), ma=msg.number("MA"), ms=msg.number("MS"),
                          mas=msg.number("MAS"), focus=_int_field(msg, "FO"),
                          dap_dgycm2=msg.number("DAP"), heat_hu=msg.number("HU"),
                          terminated_by_aec=msg.get("AEC") == "1", timestamp=msg.number("TS"))


def limits_fields(lim: GeneratorLimits) -> dict[str, str]:
    return {"KVL": num(lim.kv_min), "KVH": num(lim.kv_max), "MAL": num(lim.ma_min),
            "MAH": num(lim.ma_max), "MSL": num(lim.ms_min), "MSH": num(lim.ms_max),
            "QL": num(lim.mas_min), "QH": num(lim.mas_max), "PW": num(lim.max_power_kw),
            "FS": num(lim.focus_ma_max[0]), "FL": num(lim.focus_ma_max[1]),
            "HC": num(lim.heat_capacity_hu), "CR": num(lim.cooling_hu_per_s)}


def limits_from(msg: Message) -> GeneratorLimits:
    n = msg.number
    return GeneratorLimits(kv_min=n("KVL"), kv_max=n("KVH"), ma_min=n("MAL"), ma_max=n("MAH"),
                           ms_min=n("MSL"), ms_max=n("MSH"), mas_min=n("QL"), mas_max=n("QH"),
                           max_power_kw=n("PW"), focus_ma_max=(n("FS"), n("FL")),
                           heat_capacity_hu=n("HC"), cooling_hu_per_s=n("CR"))


def readback_fields(rb: GeneratorReadback, state: str) -> dict[str, str]:
    return {"IL": "1" if rb.interlock_closed else "0", "HU": num(rb.heat_hu),
            "HP": num(rb.heat_percent), "FT": rb.fault, "ST": state}


def readback_from(msg: Message) -> GeneratorReadback:
    il = msg.get("IL")
    if il not in ("0", "1"):
        raise ProtocolError(f"{msg.name}: field IL must be 0 or 1: {il!r}")
    return GeneratorReadback(interlock_closed=il == "1", heat_hu=msg.number("HU"),
                             heat_percent=msg.number("HP"), fault=msg.get("FT"))
