"""The reply envelope ``{code, description, solution, data}`` shared by every transport.

A success carries ``code = "0x000000"`` and the reply message in ``data``, tagged with its
``@type`` (``type.googleapis.com/dr.study.Study`` ...) as the reference console does. An
error carries the result code of the :class:`~dios.codes.DiosError` that stopped the
request, with description and solution in the caller's language (``Language`` header:
``en`` or ``zh``). Anything else that escapes a service becomes ``INTERNAL``: the
traceback goes to the log with an incident id, never to the client.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from dios.codes import INTERNAL, SUCCESS, DiosError

log = logging.getLogger("dios.shim")

TYPE_PREFIX = "type.googleapis.com/"
EMPTY = "google.protobuf.Empty"
LANGUAGES = ("en", "zh")


@dataclass(frozen=True)
class Blob:
    """A binary reply (image file, preview, icon): raw bytes on the wire, never base64."""

    content: bytes
    media_type: str
    filename: str = ""


def language_of(value: object) -> str:
    """Normalise a ``Language`` header (``zh``, ``zh-CN``, ``en-US``, missing) to en/zh."""
    if isinstance(value, str) and value.strip().lower().startswith("zh"):
        return "zh"
    return "en"


def type_url(type_name: str) -> str:
    """``dr.study.Study`` -> ``type.googleapis.com/dr.study.Study``."""
    return type_name if type_name.startswith(TYPE_PREFIX) else TYPE_PREFIX + type_name


def typed(type_name: str | None, data: Any) -> Any:
    """Tag ``data`` with ``@type`` (first key; a service's own ``@type`` wins).
    ``google.protobuf.Empty`` wraps as the seed shows: ``{"@type":
    ".../google.protobuf.Empty", "value": {}}``. Untyped data is returned unchanged
    (``{}`` for None)."""
    if type_name is None:
        return {} if data is None else data
    if type_name == EMPTY:
        return {"@type": type_url(EMPTY), "value": {}}
    if not isinstance(data, dict):
        raise TypeError(f"a typed reply ({type_name}) needs an object as its data")
    body = {k: v for k, v in data.items() if k != "@type"}
    return {"@type": data.get("@type") or type_url(type_name), **body}


def success(data: Any = None, type_name: str | None = None, language: str = "en") -> dict[str, Any]:
    """The success envelope around ``data`` (tagged with ``type_name`` when given)."""
    desc, sol = SUCCESS.text(language)
    return {"code": SUCCESS.hex, "description": desc, "solution": sol,
            "data": typed(type_name, data)}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def error_data(err: DiosError) -> dict[str, Any]:
    """The simple (string, number, boolean, null) detail fields an error carries."""
    return {k: v for k, v in err.data.items() if _plain(v)}


class ReplyFailure(DiosError):
    """A refusal that comes with a reply message: a device's reply to a command.

    It keeps the code, detail and data of the error it wraps. ``message`` is the reply
    message; :func:`~dios.shim.dispatch.dispatch` sets ``shown`` (the message tagged with
    its ``@type``) when the caller asked for full replies, and the error envelope then
    carries it as ``data`` instead of the bare detail fields.
    """

    def __init__(self, err: DiosError, message: dict[str, Any]) -> None:
        super().__init__(err.code, err.detail, **err.data)
        self.message = message
        self.shown: dict[str, Any] | None = None


def failure(err: DiosError, language: str = "en") -> dict[str, Any]:
    """The error envelope of ``err``: its code, localized text, simple detail fields (or
    the reply message of a :class:`ReplyFailure` whose caller asked for it)."""
    shown = err.shown if isinstance(err, ReplyFailure) else None
    data = shown if shown is not None else error_data(err)
    return {"code": err.code.hex, "description": err.description(language),
            "solution": err.solution(language), "data": data}


def internal_error(exc: BaseException, where: str = "") -> DiosError:
    """Log ``exc`` with its traceback under a fresh incident id; return the INTERNAL error
    the client sees (the id only, no traceback, no exception text)."""
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s in %s: %s", incident, where or "shim", type(exc).__name__,
              exc_info=exc)
    return DiosError(INTERNAL, f"incident {incident}", incident=incident)


def from_exception(exc: BaseException, language: str = "en", where: str = "") -> dict[str, Any]:
    """Envelope for any exception: DiosError as is, anything else as logged INTERNAL."""
    if isinstance(exc, DiosError):
        return failure(exc, language)
    return failure(internal_error(exc, where), language)
