"""Catalog vocabulary, the Renard technique tables and field validation.

Everything here is pure data and pure functions, shared by the catalog service and the
catalog builder.

Work stations (``work_station_id``)
    ``1`` table Bucky (grid, SID 115 cm human / 100 cm veterinary table),
    ``2`` wall stand Bucky (grid, SID 180 cm for chest and lateral cervical spine, 115 cm
    otherwise), ``3`` free detector (no grid, SID 100 cm: table-top, bedside, trolley).
    A client that sends ``0`` means "the view's default station"
    (:func:`CatalogService.apr` resolves it).

Technique fields (``config_object.Common`` of an APR exposure)
    ``ExposureMode`` 0 mA/ms, 1 mAs, 2 AEC; ``Focus`` 0 small, 1 large; ``AECField``
    three ``0``/``1`` characters for the left, centre and right chambers; ``AECDensity``
    -5..+5.

Geometry (``AprDevice`` / ``dp``)
    ``GridType`` 0 none, 1 stationary, 2 reciprocating (Bucky); ``TubeAngle`` degrees,
    positive cranial (cephalad), negative caudal; ``Thickness`` the typical patient
    thickness in cm for the body part.

Display (``config_object.DX``)
    ``ImageRotate`` ``"0"``/``"90"``/``"180"``/``"270"`` degrees clockwise,
    ``ImageHorizontalFlip`` ``"YES"``/``"NO"`` applied after the rotation.
"""

from __future__ import annotations

import math
import re
from typing import Any

from dios.codes import INVALID_FIELD, MISSING_FIELD, DiosError

PRODUCTS: tuple[str, ...] = ("DROS", "VETDROS")
LANGUAGES: tuple[str, ...] = ("en", "zh")
PATIENT_SIZES: tuple[str, ...] = ("Large", "Medium", "Small", "Paediatric")
WORK_STATIONS: dict[int, str] = {1: "Table Bucky", 2: "Wall stand Bucky", 3: "Free detector"}
#: the image pipeline's processing profile names (``img_proc_id``)
PROFILES: tuple[str, ...] = ("default", "chest", "skull", "extremity", "abdomen", "spine",
                             "pediatric")
KINDS: tuple[str, ...] = ("patient_type", "body_part", "procedure", "view")
ROTATIONS: tuple[str, ...] = ("0", "90", "180", "270")
LATERALITIES: tuple[str, ...] = ("L", "R", "U", "B")
EXPOSURE_MODES: tuple[int, ...] = (0, 1, 2)

#: generator limits every technique must respect (the simulator's and typical tubes')
KV_RANGE = (40.0, 150.0)
MA_RANGE = (10.0, 1000.0)
MS_RANGE = (1.0, 10000.0)
MAS_RANGE = (0.1, 1000.0)
#: mA ceiling per focus (0 small, 1 large) and the power the chart stays under (kW)
FOCUS_MA_MAX = (400.0, 1000.0)
CHART_POWER_KW = 64.0
TARGET_EXI_RANGE = (50, 2000)
#: how far mAs may differ from mA x ms / 1000: the rounding of the R10 numbers
#: (1.25 x 1.25 = 1.5625 against 1.6)
MAS_TOLERANCE = 0.025

# ---------------------------------------------------------------------------------------
# Reply key sets (the reference console API)
# ---------------------------------------------------------------------------------------

PATIENT_TYPE_KEYS = ("id", "patient_type_id", "patient_type_name", "patient_type_local",
                     "patient_type_description", "sort", "is_enabled", "product",
                     "is_pre_install")
BODY_PART_KEYS = ("id", "body_part_id", "body_part_name", "body_part_local",
                  "body_part_description", "patient_type", "category", "sort", "is_enabled",
                  "product", "is_pre_install")
PROCEDURE_KEYS = ("id", "procedure_id", "procedure_code", "procedure_name",
                  "procedure_name_local", "procedure_other_name", "procedure_description",
                  "procedure_description_local", "patient_type", "body_part_id",
                  "procedure_type", "fast_search", "protocol_laterality",
                  "procedure_category", "modality", "sort", "is_enabled", "product",
                  "is_pre_install")
VIEW_KEYS = ("internal_id", "view_id", "view_name", "view_name_local", "view_other_name",
             "view_description", "view_position", "application", "anatomic_region",
             "patient_type", "body_part_id", "view_icon_name", "view_big_icon_name",
             "view_coach_name", "modality", "work_station_id", "apr_id", "img_proc_id",
             "config_object", "sort", "is_enabled", "product", "is_pre_install")
VIEW_DX_KEYS = ("CollimatorCenter", "CollimatorFilter", "CollimatorNoChange", "CollimatorSize",
                "CollimatorSizeLength", "CollimatorSizeWidth", "ImageHorizontalFlip",
                "ImageLaterality", "ImageRotate", "LabelPosition", "LabelStyle",
                "PatientOrientationColumn", "PatientOrientationRow", "RatioFactorLength",
                "RatioFactorSize", "RatioFactorThickness", "RatioFactorWeight", "StandPos",
                "TargetEXI", "ViewID")
APR_KEYS = ("apr_id", "apr_name", "apr_description", "patient_type", "body_part_id",
            "view_position", "category", "modality", "exposures", "sort", "is_enabled",
            "product", "is_pre_install")
EXPOSURE_COMMON_KEYS = ("AECDensity", "AECField", "AECFilm", "Dose", "ExposureMode", "Focus",
                        "TOD", "TubeLoad", "kV", "mA", "mAs", "ms")
DEVICE_COMMON_KEYS = ("APRNumber", "DetectorAngle", "FpdAcquisitionMode", "FrameRate",
                      "GridSpeed", "GridType", "PositionNumber", "SID", "Thickness",
                      "TubeAngle")
TECH_DP_KEYS = ("SID", "GridType", "GridSpeed", "DetectorAngle", "TubeAngle", "TubeHeight",
                "APRNumber", "PositionNumber", "Thickness", "FrameRate", "LongTimeExp")
TECH_EP_KEYS = ("kV", "mA", "ms", "mAs", "ExposureMode", "Focus", "AECFilm", "AECField",
                "AECDensity", "Dose", "TubeLoad", "TOD", "CompressionThickness")

TYPE_PREFIX = "type.googleapis.com/dr.protocol."

# ---------------------------------------------------------------------------------------
# Renard series
# ---------------------------------------------------------------------------------------

#: the rounded R10 preferred numbers of one decade (ISO 3)
R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0)


def renard_values(lo: float, hi: float, base: tuple[float, ...] = R10) -> list[float]:
    """All values of a Renard series between ``lo`` and ``hi`` inclusive, ascending."""
    out: list[float] = []
    decade = 10.0 ** math.floor(math.log10(lo))
    while decade <= hi:
        for b in base:
            v = round(b * decade, 6)
            if lo - 1e-9 <= v <= hi + 1e-9:
                out.append(v)
        decade *= 10.0
    return out


MA_TABLE = renard_values(*MA_RANGE)
MS_TABLE = renard_values(*MS_RANGE)
MAS_TABLE = renard_values(*MAS_RANGE)


def snap(value: float, table: list[float]) -> float:
    """The table value nearest to ``value`` on a logarithmic scale."""
    return min(table, key=lambda t: abs(math.log(t / value)))


def clean_number(x: float) -> int | float:
    """An int when integral, else a float rounded to 3 decimals (as the reference replies)."""
    r = round(float(x), 3)
    return int(r) if r == int(r) else r


def split_mas(mas: float, kv: float, ma_pref: float, focus: int) -> tuple[float, float, float]:
    """Split a target mAs into (mA, ms, mAs) on the R10 tables.

    The mAs is first snapped to R10; the mA is the highest R10 value not above the
    preferred mA, the focus ceiling and the chart power for which an R10 time gives that
    mAs within :data:`MAS_TOLERANCE` (200 mA x 63 ms for 12.5 mAs).

    Raises
    ------
    ValueError
        When no pair fits the generator limits.
    """
    target = snap(mas, MAS_TABLE)
    cap = min(ma_pref, FOCUS_MA_MAX[focus], CHART_POWER_KW * 1000.0 / kv)
    for ma in (m for m in reversed(MA_TABLE) if m <= cap + 1e-9):
        ms_exact = target * 1000.0 / ma
        if ms_exact < MS_RANGE[0] - 1e-9:
            continue
        if ms_exact > MS_RANGE[1] + 1e-9:
            break
        ms = snap(ms_exact, MS_TABLE)
        if abs(ma * ms / 1000.0 - target) <= MAS_TOLERANCE * target:
            return ma, ms, target
    raise ValueError(f"no mA/ms pair for {mas} mAs at {kv} kV")


# ---------------------------------------------------------------------------------------
# Validation helpers (raise DiosError with INVALID_FIELD / MISSING_FIELD)
# ---------------------------------------------------------------------------------------

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_ .\-]{0,63}$")


def require(entry: dict[str, Any], key: str) -> Any:
    """``entry[key]``, or MISSING_FIELD when absent, None or an empty string."""
    if key not in entry or entry[key] is None or entry[key] == "":
        raise DiosError(MISSING_FIELD, key)
    return entry[key]


def check_str(key: str, value: Any, *, max_len: int = 256, empty: bool = True) -> str:
    """A string of at most ``max_len`` characters."""
    if not isinstance(value, str) or len(value) > max_len or (not empty and not value):
        raise DiosError(INVALID_FIELD, f"{key} must be a string of at most {max_len} characters")
    return value


def check_id(key: str, value: Any) -> str:
    """A catalog id: letters, digits, ``_ .-``, at most 64 characters."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise DiosError(INVALID_FIELD, f"{key} must be 1-64 letters, digits, '_', ' ', '.', '-'")
    return value


def check_bool(key: str, value: Any) -> bool:
    """A JSON boolean (no strings, no numbers)."""
    if not isinstance(value, bool):
        raise DiosError(INVALID_FIELD, f"{key} must be true or false")
    return value


def check_int(key: str, value: Any, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise DiosError(INVALID_FIELD, f"{key} must be an integer in {lo}..{hi}")
    return value


def check_number(key: str, value: Any, lo: float, hi: float) -> float:
    """A finite number in ``[lo, hi]`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and lo <= value <= hi
    ):
        raise DiosError(INVALID_FIELD, f"{key} must be a number in {lo:g}..{hi:g}")
    return float(value)


def check_choice(key: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """One of ``choices``."""
    if isinstance(value, bool) or value not in choices:
        raise DiosError(INVALID_FIELD, f"{key} must be one of {', '.join(map(str, choices))}")
    return value


def check_exposure_common(key: str, common: Any) -> dict[str, Any]:
    """Validate an APR exposure's ``config_object.Common`` and return it normalised.

    kV, mA, ms and mAs must lie within the generator limits and agree
    (mAs = mA x ms / 1000 within :data:`MAS_TOLERANCE`, the rounding of the R10 tables).
    """
    if not isinstance(common, dict):
        raise DiosError(INVALID_FIELD, f"{key} must be an object")
    for k in ("kV", "mA", "ms", "mAs"):
        require(common, k)
    out: dict[str, Any] = {
        "AECDensity": check_int(f"{key}.AECDensity", common.get("AECDensity", 0), -5, 5),
        "AECField": common.get("AECField", "010"),
        "AECFilm": check_int(f"{key}.AECFilm", common.get("AECFilm", 1), 0, 9),
        "Dose": check_number(f"{key}.Dose", common.get("Dose", 0), 0, 1e6),
        "ExposureMode": check_choice(f"{key}.ExposureMode", common.get("ExposureMode", 0),
                                     EXPOSURE_MODES),
        "Focus": check_choice(f"{key}.Focus", common.get("Focus", 0), (0, 1)),
        "TOD": check_number(f"{key}.TOD", common.get("TOD", 0), 0, 1e6),
        "TubeLoad": check_number(f"{key}.TubeLoad", common.get("TubeLoad", 0), 0, 100),
        "kV": check_number(f"{key}.kV", common["kV"], *KV_RANGE),
        "mA": check_number(f"{key}.mA", common["mA"], *MA_RANGE),
        "mAs": check_number(f"{key}.mAs", common["mAs"], *MAS_RANGE),
        "ms": check_number(f"{key}.ms", common["ms"], *MS_RANGE),
    }
    if not isinstance(out["AECField"], str) or not re.fullmatch(r"[01]{3}", out["AECField"]):
        raise DiosError(INVALID_FIELD, f"{key}.AECField must be three characters 0/1")
    if out["mA"] > FOCUS_MA_MAX[out["Focus"]]:
        raise DiosError(INVALID_FIELD, f"{key}.mA above the ceiling of focus {out['Focus']}")
    product = out["mA"] * out["ms"] / 1000.0
    if abs(product - out["mAs"]) > MAS_TOLERANCE * out["mAs"] + 1e-3:
        raise DiosError(INVALID_FIELD, f"{key}.mAs must equal mA x ms / 1000")
    for k in ("Dose", "TOD", "TubeLoad", "kV", "mA", "mAs", "ms"):
        out[k] = clean_number(out[k])
    return out
