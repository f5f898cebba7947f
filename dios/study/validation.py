"""Validation of the patient and study fields of register and update requests.

Each field has one rule (type, length, allowed values, format); a missing mandatory field
is ``MISSING_FIELD`` and a wrong one ``INVALID_FIELD``, both naming the field in the
description and in the error's ``field`` datum. Nothing is stored before the whole
request has passed.

Lengths follow the DICOM value representations the fields end up in: accession number SH
(16), ids and names LO/PN (64), comment LT (10240). ``patient_age`` is a DICOM age
(``5Y``, ``012M``, ``3W``, ``10D``), dates are ISO 8601 (``2025-06-10`` or
``2025-06-10T03:12:36.181739Z``), flags are booleans (``true``/``false`` strings are
accepted, as the seed's forms send them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dios.codes import INVALID_FIELD, MISSING_FIELD, DiosError
from dios.study.model import (
    MODALITIES,
    PATIENT_SIZES,
    PREGNANCY_STATUSES,
    SEX_NEUTERED,
    SEXES,
    STUDY_TYPES,
)

__all__ = ["FIELD_RULES", "parse_iso_datetime", "validate_study_fields", "validate_views"]

_AGE = re.compile(r"\d{1,3}[DWMY]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_BREAK = re.compile(r"[\r\n\t]")
_MAX_INT = 10_000


def _kind(value: Any) -> str:
    """The JSON word for ``value``'s type (what a client sent, in its own terms)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (bytes, bytearray)):
        return "binary"
    return "string" if isinstance(value, str) else "a value of another kind"


def _invalid(name: str, why: str) -> DiosError:
    return DiosError(INVALID_FIELD, f"{name}: {why}", field=name)


def _text(max_len: int, multiline: bool = False) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _invalid(name, f"must be a string, got {_kind(value)}")
        if len(value) > max_len:
            raise _invalid(name, f"longer than {max_len} characters")
        if _CONTROL.search(value) or (not multiline and _LINE_BREAK.search(value)):
            raise _invalid(name, "contains control characters")
        if "\\" in value and not multiline:
            raise _invalid(name, "may not contain a backslash")
        return value
    return check


def _choice(values: tuple[str, ...], allow_empty: bool = False) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if allow_empty and value == "":
            return ""
        if not isinstance(value, str) or value not in values:
            raise _invalid(name, f"must be one of {', '.join(values)}, got {value!r}")
        return value
    return check


def _age(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _AGE.fullmatch(value):
        raise _invalid(name, f"must be a DICOM age like 5Y, 012M, 3W or 10D, got {value!r}")
    return value


def parse_iso_datetime(value: str) -> datetime:
    """Parse an ISO 8601 date or date-time (``Z`` allowed); naive values are taken as UTC."""
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        d = date.fromisoformat(text)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?",
                        text):
        raise ValueError(f"not ISO 8601: {value!r}")
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:  # Python takes at most microseconds
        text = text.replace(frac.group(0), "." + frac.group(1)[:6])
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _dob(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid(name, "must be an ISO 8601 date string")
    try:
        dt = parse_iso_datetime(value)
    except ValueError:
        raise _invalid(name, f"must be an ISO 8601 date or date-time, got {value!r}") from None
    if dt > datetime.now(UTC) + timedelta(days=1):
        raise _invalid(name, "is in the future")
    if dt.year < 1850:
        raise _invalid(name, "is before 1850")
    return value


def _flag(name: str, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return int(value.lower() == "true")
    raise _invalid(name, f"must be a boolean, got {value!r}")


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _invalid(name, "must be an integer, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,6}", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int):
        raise _invalid(name, f"must be an integer, got {value!r}")
    if not 0 <= value <= _MAX_INT:
        raise _invalid(name, f"must be between 0 and {_MAX_INT}")
    return value


@dataclass(frozen=True)
class Rule:
    """One request field: its column, check, and whether register/update require it."""

    column: str
    check: Callable[[str, Any], Any]
    on_register: bool  # allowed in register
    on_update: bool  # allowed in update
    required_register: bool = False
    required_update: bool = False
    default: Any = ""


#: request field -> rule (``operator_id`` is stored and replied as ``operator_name``).
FIELD_RULES: dict[str, Rule] = {
    "accession_number": Rule("accession_number", _text(16), True, True, True, True),
    "patient_id": Rule("patient_id", _text(64), True, True, True, True),
    "patient_name": Rule("patient_name", _text(64), True, True, True, True),
    "patient_english_name": Rule("patient_english_name", _text(64), True, True),
    "patient_former_name": Rule("patient_former_name", _text(64), True, True),
    "patient_size": Rule("patient_size", _choice(PATIENT_SIZES), True, True, True, True),
    "patient_age": Rule("patient_age", _age, True, True, True, True),
    "patient_dob": Rule("patient_dob", _dob, True, True, True, True),
    "patient_sex": Rule("patient_sex", _choice(SEXES, allow_empty=True), True, True, False, True),
    "sex_neutered": Rule("sex_neutered", _choice(SEX_NEUTERED, allow_empty=True), True, True),
    "pregnancy_status": Rule("pregnancy_status", _choice(PREGNANCY_STATUSES, allow_empty=True),
                             True, True),
    "owner_name": Rule("owner_name", _text(64), True, True),
    "chip_number": Rule("chip_number", _text(64), True, True),
    "variety": Rule("variety", _text(64), True, True),
    "is_anaesthesia": Rule("is_anaesthesia", _flag, True, True, default=0),
    "is_sedation": Rule("is_sedation", _flag, True, True, default=0),
    "patient_type": Rule("patient_type", _text(64), True, False, True),
    "ref_physician": Rule("ref_physician", _text(64), True, True),
    "operator_id": Rule("operator_name", _text(64), True, True),
    "modality": Rule("modality", _choice(MODALITIES), True, False, True),
    "weight": Rule("weight", _count, True, True, default=0),
    "thickness": Rule("thickness", _count, True, True, default=0),
    "length": Rule("length", _count, True, True, default=0),
    "study_type": Rule("study_type", _choice(STUDY_TYPES), True, False, True),
    "comment": Rule("comment", _text(10240, multiline=True), True, True),
}


def validate_study_fields(request: Any, mode: str) -> dict[str, Any]:
    """Check the patient/study fields of a ``register`` or ``update`` request.

    Returns the column values to store: every field of the mode for ``register``
    (defaults filled in), only the fields present for ``update``. Fields of no rule are
    ignored. Raises ``MISSING_FIELD`` / ``INVALID_FIELD`` for the first bad field.
    """
    if mode not in ("register", "update"):
        raise ValueError(mode)
    if not isinstance(request, dict):
        raise DiosError(INVALID_FIELD, "the request must be an object")
    out: dict[str, Any] = {}
    for name, rule in FIELD_RULES.items():
        if not (rule.on_register if mode == "register" else rule.on_update):
            continue
        required = rule.required_register if mode == "register" else rule.required_update
        value = request.get(name)
        if value is None or (value == "" and required):
            if required:
                raise DiosError(MISSING_FIELD, name, field=name)
            if mode == "register":
                out[rule.column] = rule.default
            continue
        out[rule.column] = rule.check(name, value)
    return out


def validate_views(views: Any, name: str = "views") -> list[tuple[str, str]]:
    """Check a ``views`` array; return ``[(view_id, procedure_id), ...]``."""
    if views is None or views == []:
        raise DiosError(MISSING_FIELD, name, field=name)
    if not isinstance(views, list):
        raise _invalid(name, "must be an array of {view_id, procedure_id}")
    if len(views) > 100:
        raise _invalid(name, "at most 100 views per request")
    out: list[tuple[str, str]] = []
    for i, v in enumerate(views):
        where = f"{name}[{i}]"
        if not isinstance(v, dict):
            raise _invalid(where, "must be an object {view_id, procedure_id}")
        view_id = v.get("view_id")
        if view_id is None or view_id == "":
            raise DiosError(MISSING_FIELD, f"{where}.view_id", field=f"{where}.view_id")
        view_id = _text(128)(f"{where}.view_id", view_id)
        procedure_id = v.get("procedure_id", "")
        procedure_id = "" if procedure_id is None else _text(128)(f"{where}.procedure_id",
                                                                   procedure_id)
        out.append((view_id, procedure_id))
    return out
