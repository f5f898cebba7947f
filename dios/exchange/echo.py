"""Verification (C-ECHO SCU) and the association set-up the other SCUs share.

:func:`open_association` asks a node for an association with the console's own AE title
and the ``[dicom]`` timeouts and tells apart why it could not be had:

==================  =========================================================
code                when
==================  =========================================================
``PEER_UNREACHABLE`` no TCP connection (refused, no route, connect timeout)
``DICOM_ERROR``      the peer rejected the association (a wrong called or
                     calling AE title, no accepted presentation context) or
                     aborted it
``TIMEOUT``          the connection was accepted but the association request
                     got no answer within ``acse_timeout``
==================  =========================================================

:func:`echo` is the "test connection" of a node: one C-ECHO with its round trip time,
``ok`` only on status ``0x0000``. It never raises for a network problem: the result says
what happened (``code`` and ``description``).

The association in progress can be aborted from another thread (:class:`Abort`), so that
closing the console never waits for a silent peer's timeout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import Verification

from dios.codes import DICOM_ERROR, PEER_UNREACHABLE, SUCCESS, TIMEOUT, ResultCode
from dios.config import DicomConfig
from dios.exchange.nodes import Node

__all__ = ["Abort", "AssociationFailure", "EchoResult", "echo", "make_ae", "open_association"]


@dataclass(frozen=True)
class AssociationFailure:
    """Why an association could not be had: a result code and the reason in words."""

    code: ResultCode
    description: str
    #: True when trying again later may help (peer down, no answer, transient rejection)
    transient: bool


class Abort:
    """A handle on the association being opened or used, to abort it from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assoc: Association | None = None
        self.aborted = False

    def attach(self, assoc: Association | None) -> None:
        with self._lock:
            self._assoc = assoc
            abort_now = self.aborted and assoc is not None
        if abort_now:
            assoc.abort()  # type: ignore[union-attr]

    def abort(self) -> None:
        """Abort the association (now, or as soon as it is attached)."""
        with self._lock:
            self.aborted = True
            assoc = self._assoc
        if assoc is not None:
            assoc.abort()


def make_ae(config: DicomConfig) -> AE:
    """An application entity with the console's AE title and the ``[dicom]`` timeouts."""
    ae = AE(ae_title=config.ae_title)
    ae.connection_timeout = config.connect_timeout
    ae.acse_timeout = config.acse_timeout
    ae.dimse_timeout = config.dimse_timeout
    ae.network_timeout = config.network_timeout
    return ae


def open_association(ae: AE, node: Node, config: DicomConfig, abort: Abort | None = None,
                     ) -> tuple[Association | None, AssociationFailure | None]:
    """Associate with ``node``: ``(association, None)`` or ``(None, why not)``.

    The requested presentation contexts are those already added to ``ae``.
    """
    seen: dict[str, Any] = {"open": False, "reply": None}

    def on_open(event: Any) -> None:
        seen["open"] = True
        if abort is not None:
            abort.attach(event.assoc)

    def on_acse(event: Any) -> None:
        if isinstance(event.primitive, A_ASSOCIATE) and event.primitive.result is not None:
            seen["reply"] = event.primitive

    started = time.monotonic()
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, on_open),
                                       (evt.EVT_ACSE_RECV, on_acse)])
    if assoc.is_established:
        return assoc, None
    _finish(assoc)
    where = f"{node.ae_title} at {node.host}:{node.port}"
    reply = seen["reply"]
    if abort is not None and abort.aborted:
        return None, AssociationFailure(DICOM_ERROR, f"{where}: stopped by the console", True)
    if assoc.is_rejected and reply is not None:
        transient = reply.result == 0x02
        return None, AssociationFailure(
            DICOM_ERROR, f"{where} rejected the association ({reply.result_str.lower()}, "
            f"{reply.source_str}: {reply.reason_str})", transient)
    if not seen["open"]:
        return None, AssociationFailure(
            PEER_UNREACHABLE, f"cannot connect to {where} (refused, unreachable or no answer "
            f"within {config.connect_timeout:g} s)", True)
    if reply is None:
        waited = time.monotonic() - started
        if waited >= config.acse_timeout * 0.9:
            return None, AssociationFailure(
                TIMEOUT, f"{where} accepted the connection but did not answer the "
                f"association request within {config.acse_timeout:g} s", True)
        return None, AssociationFailure(
            DICOM_ERROR, f"{where} closed the connection during association set-up", True)
    if reply.result == 0x00:
        return None, AssociationFailure(
            DICOM_ERROR, f"{where} accepted none of the proposed presentation contexts", False)
    return None, AssociationFailure(DICOM_ERROR, f"{where} aborted the association", True)


def _finish(assoc: Association, wait: float = 10.0) -> None:
    """Make sure an association's thread has ended (no thread left behind)."""
    if assoc.is_alive() and assoc is not threading.current_thread():
        assoc.kill()
        assoc.join(wait)


def close_association(assoc: Association, release: bool = True) -> None:
    """Release (or abort) ``assoc`` and wait for its thread."""
    if assoc.is_established:
        if release:
            assoc.release()
        else:
            assoc.abort()
    _finish(assoc)


@dataclass(frozen=True)
class EchoResult:
    """The outcome of one C-ECHO.

    ``ok``: status ``0x0000`` received. ``status``: the peer's DIMSE status (``0x0000``),
    empty when there was none. ``rtt_ms``: from the request to the response (the whole
    attempt when there was no response). ``code``/``description``: the console's result
    code (``0x000000`` on success) and what happened.
    """

    ok: bool
    status: str
    rtt_ms: float
    code: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def echo(node: Node, config: DicomConfig, abort: Abort | None = None) -> EchoResult:
    """Send one C-ECHO to ``node`` as ``config.ae_title`` (see the module docstring)."""
    ae = make_ae(config)
    ae.add_requested_context(Verification)
    started = time.monotonic()
    assoc, failure = open_association(ae, node, config, abort)
    if assoc is None:
        assert failure is not None
        return EchoResult(False, "", _ms(started), failure.code.hex, failure.description)
    try:
        sent = time.monotonic()
        rsp = assoc.send_c_echo()
        rtt = _ms(sent)
        status = rsp.get("Status") if rsp is not None else None
        if status is None:
            return EchoResult(False, "", rtt, TIMEOUT.hex if assoc.is_established else
                              DICOM_ERROR.hex,
                              f"no C-ECHO response from {node.ae_title} within "
                              f"{config.dimse_timeout:g} s" if assoc.is_established else
                              f"{node.ae_title} aborted the association")
        text = f"0x{int(status):04X}"
        if int(status) == 0:
            return EchoResult(True, text, rtt, SUCCESS.hex,
                              f"{node.ae_title} at {node.host}:{node.port} answered")
        return EchoResult(False, text, rtt, DICOM_ERROR.hex,
                          f"{node.ae_title} answered the C-ECHO with status {text}")
    finally:
        close_association(assoc)


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000.0, 2)
