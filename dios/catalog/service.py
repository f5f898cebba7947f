"""The catalog service: the shipped catalog plus the user's overrides, in reply shapes.

The shipped catalog (``dios/catalog/data/*.json``) is read-only. What the user changes is
kept apart, in ``<data_dir>/catalog.json``, written atomically:

* ``enabled``: per kind, id -> bool (any entry, shipped or custom)
* ``sort``: per kind, id -> int (any entry)
* ``custom``: per kind, the custom entries as validated input (``is_pre_install`` false)

Every change is validated against a copy of the state, persisted, and only then made
current: a rejected change or a failed write leaves the service as it was. Reads work on
an immutable snapshot and need no lock.

Reply shapes follow the reference console API exactly (field names, value types,
``@type`` names); see :mod:`dios.catalog.model` for the key sets.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from dios.catalog import model as m
from dios.catalog.icons import render_icon
from dios.codes import (
    CATALOG_NOT_FOUND,
    CATALOG_READONLY,
    DUPLICATE,
    INVALID_FIELD,
    NO_TECHNIQUE,
    STORAGE_ERROR,
    DiosError,
)

log = logging.getLogger(__name__)

OVERRIDES_FILE = "catalog.json"
DATA_FILES = {"DROS": "dros.json", "VETDROS": "vetdros.json"}
ICON_SIZE = 64
ICON_SIZE_LARGE = 192
#: custom entries get numeric ``id`` values above this (shipped ones stay below)
CUSTOM_ID_BASE = 10000
_ID_KEY = {"patient_type": "patient_type_id", "body_part": "body_part_id",
           "procedure": "procedure_id", "view": "view_id"}


@cache
def _shipped(product: str) -> dict[str, Any]:
    text = resources.files("dios.catalog").joinpath("data", DATA_FILES[product]).read_text(
        encoding="utf-8")
    return json.loads(text)


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        from dios.atomic import atomic_write_bytes  # type: ignore[import-not-found]
    except ImportError:
        atomic_write_bytes = None
    if atomic_write_bytes is not None:
        atomic_write_bytes(path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class _Rec:
    """One catalog entry as indexed: internal record plus its overrides."""

    data: dict[str, Any]
    product: str
    pre_install: bool
    order: int
    enabled: bool
    sort: int


@dataclass
class _Index:
    entries: dict[str, dict[str, _Rec]] = field(default_factory=lambda: {k: {} for k in m.KINDS})
    aprs: dict[str, _Rec] = field(default_factory=dict)
    stations: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    #: custom entries left out because they no longer fit the catalog: (kind, id)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _empty_overrides() -> dict[str, Any]:
    return {"format": 1, "enabled": {k: {} for k in m.KINDS}, "sort": {k: {} for k in m.KINDS},
            "custom": {k: [] for k in m.KINDS}}


def _loc(names: dict[str, str], language: str) -> str:
    return names.get(language) or names.get("en") or next(iter(names.values()), "")


class CatalogService:
    """Patient types, body parts, procedures, views and their techniques.

    Parameters
    ----------
    data_dir : str or os.PathLike or None
        Directory of the user's overrides file (``catalog.json``); ``None`` keeps the
        overrides in memory only.
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(data_dir) / OVERRIDES_FILE if data_dir is not None else None
        self._lock = threading.RLock()
        self._icons: dict[tuple[str, int], bytes] = {}
        ov = _empty_overrides()
        if self._path is not None and self._path.exists():
            try:
                loaded = json.loads(self._path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DiosError(STORAGE_ERROR, f"cannot read {self._path}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise DiosError(STORAGE_ERROR, f"{self._path} is not a JSON object")
            for part, shape in (("enabled", dict), ("sort", dict), ("custom", list)):
                section = loaded.get(part, {})
                for kind in m.KINDS:
                    val = section.get(kind) if isinstance(section, dict) else None
                    if val is None:
                        continue
                    item_type = {"enabled": bool, "sort": int, "custom": dict}[part]
                    if not isinstance(val, shape) or not all(
                            isinstance(x, item_type) and not (item_type is int and
                                                              isinstance(x, bool))
                            for x in (val.values() if isinstance(val, dict) else val)):
                        raise DiosError(STORAGE_ERROR, f"{self._path}: {part}.{kind} malformed")
                    ov[part][kind] = val
        self._index = self._compile(ov, strict=False)
        for kind, eid in self._index.skipped:  # e.g. its parent left the shipped catalog
            ov["custom"][kind] = [e for e in ov["custom"][kind] if e.get(_ID_KEY[kind]) != eid]
        self._ov = ov

    # -------------------------------------------------------------------------------
    # Index
    # -------------------------------------------------------------------------------

    def _compile(self, ov: dict[str, Any], strict: bool) -> _Index:
        """Merge shipped data and overrides into a new index."""
        idx = _Index()
        order = 0
        for product in m.PRODUCTS:
            doc = _shipped(product)
            idx.stations[product] = {int(k): v for k, v in doc["work_stations"].items()}
            for kind, key in (("patient_type", "patient_types"), ("body_part", "body_parts"),
                              ("procedure", "procedures"), ("view", "views")):
                for rec in doc[key]:
                    order += 1
                    eid = rec[_ID_KEY[kind]]
                    idx.entries[kind][eid] = self._rec(ov, kind, eid, rec, product, True, order)
            for rec in doc["aprs"]:
                idx.aprs[rec["apr_id"]] = _Rec(rec, product, True, 0, True, 0)
        for kind in ("patient_type", "body_part", "view", "procedure"):
            for entry in ov["custom"][kind]:
                order += 1
                try:
                    rec, product, apr = self._internal(kind, entry, idx)
                    if rec[_ID_KEY[kind]] in idx.entries[kind]:
                        raise DiosError(DUPLICATE, f"{kind} {rec[_ID_KEY[kind]]!r}")
                except (DiosError, KeyError, TypeError, AttributeError) as exc:
                    if strict:
                        raise
                    log.warning("custom %s %r dropped: %s", kind, entry.get(_ID_KEY[kind]), exc)
                    idx.skipped.append((kind, entry.get(_ID_KEY[kind])))
                    continue
                eid = rec[_ID_KEY[kind]]
                idx.entries[kind][eid] = self._rec(ov, kind, eid, rec, product, False, order)
                if apr is not None:
                    idx.aprs[apr["apr_id"]] = _Rec(apr, product, False, 0, True, 0)
        return idx

    @staticmethod
    def _rec(ov: dict[str, Any], kind: str, eid: str, rec: dict[str, Any], product: str,
             pre: bool, order: int) -> _Rec:
        enabled = ov["enabled"][kind].get(eid, rec.get("is_enabled", True))
        sort = ov["sort"][kind].get(eid, rec.get("sort", order))
        return _Rec(rec, product, pre, order, bool(enabled), int(sort))

    def _get(self, kind: str, eid: Any, product: str | None = None) -> _Rec:
        if not isinstance(eid, str):
            raise DiosError(INVALID_FIELD, f"{_ID_KEY[kind]} must be a string")
        rec = self._index.entries[kind].get(eid)
        if rec is None or (product is not None and rec.product != product):
            raise DiosError(CATALOG_NOT_FOUND, f"{kind} {eid!r}")
        return rec

    @staticmethod
    def _effective(idx: _Index, kind: str, rec: _Rec) -> bool:
        """Own flag and every ancestor's flag."""
        if not rec.enabled:
            return False
        ent = idx.entries
        if kind == "patient_type":
            return True
        if kind == "body_part":
            pt = ent["patient_type"].get(rec.data["patient_type"])
            return pt is None or pt.enabled
        bp = ent["body_part"].get(rec.data["body_part_id"])
        return bp is None or CatalogService._effective(idx, "body_part", bp)

    def _list(self, kind: str, product: str, enabled_only: bool, pred: Any = None) -> list[_Rec]:
        idx = self._index  # one snapshot for the whole listing
        recs = [r for r in idx.entries[kind].values()
                if r.product == product and (pred is None or pred(r))
                and (not enabled_only or self._effective(idx, kind, r))]
        return sorted(recs, key=lambda r: (r.sort, r.order))

    @staticmethod
    def _check_product(product: Any) -> str:
        return m.check_choice("Product", product, m.PRODUCTS)

    @staticmethod
    def _check_language(language: Any) -> str:
        return m.check_choice("Language", language, m.LANGUAGES)

    # -------------------------------------------------------------------------------
    # Reply shapes
    # -------------------------------------------------------------------------------

    @staticmethod
    def _out_patient_type(r: _Rec, lang: str) -> dict[str, Any]:
        d = r.data
        name = _loc(d["name"], lang)
        return {"id": d["id"], "patient_type_id": d["patient_type_id"],
                "patient_type_name": name, "patient_type_local": name,
                "patient_type_description": d.get("description") or _loc(d["name"], "en"),
                "sort": r.sort, "is_enabled": r.enabled, "product": r.product,
                "is_pre_install": r.pre_install}

    @staticmethod
    def _out_body_part(r: _Rec, lang: str) -> dict[str, Any]:
        d = r.data
        name = _loc(d["name"], lang)
        return {"id": d["id"], "body_part_id": d["body_part_id"], "body_part_name": name,
                "body_part_local": name,
                "body_part_description": d.get("description") or _loc(d["name"], "en"),
                "patient_type": d["patient_type"], "category": d.get("category", "DX"),
                "sort": r.sort, "is_enabled": r.enabled, "product": r.product,
                "is_pre_install": r.pre_install}

    @staticmethod
    def _out_procedure(r: _Rec, lang: str) -> dict[str, Any]:
        d = r.data
        name = _loc(d["name"], lang)
        return {"id": d["id"], "procedure_id": d["procedure_id"],
                "procedure_code": d["procedure_code"], "procedure_name": name,
                "procedure_name_local": name, "procedure_other_name": _loc(d["name"], "en"),
                "procedure_description": name, "procedure_description_local": name,
                "patient_type": d["patient_type"], "body_part_id": d["body_part_id"],
                "procedure_type": d["procedure_type"], "fast_search": d["fast_search"],
                "protocol_laterality": d["protocol_laterality"],
                "procedure_category": d["procedure_category"], "modality": d["modality"],
                "sort": r.sort, "is_enabled": r.enabled, "product": r.product,
                "is_pre_install": r.pre_install}

    @staticmethod
    def _out_view(r: _Rec, lang: str) -> dict[str, Any]:
        d = r.data
        name = _loc(d["name"], lang)
        dx = {k: d["dx"][k] for k in m.VIEW_DX_KEYS if k in d["dx"]}
        dx["ViewID"] = d["view_id"]
        return {"internal_id": d["view_id"], "view_id": d["view_id"], "view_name": name,
                "view_name_local": name, "view_other_name": _loc(d["name"], "en"),
                "view_description": name, "view_position": d["view_position"],
                "application": d["application"], "anatomic_region": d["anatomic_region"],
                "patient_type": d["patient_type"], "body_part_id": d["body_part_id"],
                "view_icon_name": d["icon"] + ".png",
                "view_big_icon_name": d["icon"] + ".large.png",
                "view_coach_name": d["icon"] + ".large.png", "modality": d["modality"],
                "work_station_id": d["work_station_id"], "apr_id": d["apr_id"],
                "img_proc_id": d["img_proc_id"], "config_object": {"DX": dx},
                "sort": r.sort, "is_enabled": r.enabled, "product": r.product,
                "is_pre_install": r.pre_install}

    _OUT = {"patient_type": "_out_patient_type", "body_part": "_out_body_part",
            "procedure": "_out_procedure", "view": "_out_view"}

    def _out(self, kind: str, r: _Rec, lang: str) -> dict[str, Any]:
        return getattr(self, self._OUT[kind])(r, lang)

    # -------------------------------------------------------------------------------
    # Reads
    # -------------------------------------------------------------------------------

    def patient_types(self, product: str = "DROS", language: str = "en",
                      enabled_only: bool = False) -> list[dict[str, Any]]:
        """Patient types of a product (``patient_type_list`` items)."""
        product, lang = self._check_product(product), self._check_language(language)
        return [self._out_patient_type(r, lang)
                for r in self._list("patient_type", product, enabled_only)]

    def patient_type_list(self, product: str = "DROS", language: str = "en",
                          enabled_only: bool = False) -> dict[str, Any]:
        """The reply ``data`` of the patient-type list: ``{"patient_type_list": [...]}``."""
        return {"patient_type_list": self.patient_types(product, language, enabled_only)}

    def body_parts(self, patient_type: str | None = None, product: str = "DROS",
                   language: str = "en", enabled_only: bool = False) -> list[dict[str, Any]]:
        """Body parts of a product, optionally of one patient type."""
        product, lang = self._check_product(product), self._check_language(language)
        if patient_type is not None:
            self._get("patient_type", patient_type, product)
        return [self._out_body_part(r, lang) for r in self._list(
            "body_part", product, enabled_only,
            None if patient_type is None else lambda r: r.data["patient_type"] == patient_type)]

    def body_part_list(self, patient_type: str | None = None, product: str = "DROS",
                       language: str = "en", enabled_only: bool = False) -> dict[str, Any]:
        """The reply ``data`` of the body-part list: ``{"body_part_list": [...]}``."""
        return {"body_part_list": self.body_parts(patient_type, product, language,
                                                  enabled_only)}

    def procedures(self, body_part: str | None = None, product: str = "DROS",
                   language: str = "en", enabled_only: bool = False) -> list[dict[str, Any]]:
        """Procedures of a product, optionally of one body part."""
        product, lang = self._check_product(product), self._check_language(language)
        if body_part is not None:
            self._get("body_part", body_part, product)
        return [self._out_procedure(r, lang) for r in self._list(
            "procedure", product, enabled_only,
            None if body_part is None else lambda r: r.data["body_part_id"] == body_part)]

    def procedure_list(self, body_part: str | None = None, product: str = "DROS",
                       language: str = "en", enabled_only: bool = False) -> dict[str, Any]:
        """The ``ProcedureList`` reply ``data`` (``@type``, ``count``, ``procedures``)."""
        items = self.procedures(body_part, product, language, enabled_only)
        return {"@type": m.TYPE_PREFIX + "ProcedureList", "count": len(items),
                "procedures": items}

    def procedure(self, procedure_id: str, product: str | None = None,
                  language: str = "en") -> dict[str, Any]:
        """One procedure (``@type`` ``dr.protocol.Procedure``)."""
        lang = self._check_language(language)
        if product is not None:
            self._check_product(product)
        rec = self._get("procedure", procedure_id, product)
        return {"@type": m.TYPE_PREFIX + "Procedure", **self._out_procedure(rec, lang)}

    def procedure_view_ids(self, procedure_id: str) -> list[str]:
        """The view ids of a procedure, in exposure order."""
        return list(self._get("procedure", procedure_id).data["views"])

    def views(self, procedure_id: str | None = None, body_part: str | None = None,
              product: str = "DROS", language: str = "en",
              enabled_only: bool = False) -> list[dict[str, Any]]:
        """Views of a product: all, of one procedure (in its order), or of one body part."""
        product, lang = self._check_product(product), self._check_language(language)
        if body_part is not None:
            self._get("body_part", body_part, product)
        if procedure_id is None:
            recs = self._list("view", product, enabled_only, None if body_part is None
                              else lambda r: r.data["body_part_id"] == body_part)
        else:
            proc = self._get("procedure", procedure_id, product)
            idx = self._index
            recs, seen = [], set()
            for vid in proc.data["views"]:
                r = idx.entries["view"].get(vid)
                if r is None or vid in seen or r.product != product:
                    continue
                seen.add(vid)
                if body_part is not None and r.data["body_part_id"] != body_part:
                    continue
                if enabled_only and not self._effective(idx, "view", r):
                    continue
                recs.append(r)
        return [self._out_view(r, lang) for r in recs]

    def view_list(self, procedure_id: str | None = None, body_part: str | None = None,
                  product: str = "DROS", language: str = "en",
                  enabled_only: bool = False) -> dict[str, Any]:
        """The ``ViewList`` reply ``data`` (``@type``, ``count``, ``views``)."""
        items = self.views(procedure_id, body_part, product, language, enabled_only)
        return {"@type": m.TYPE_PREFIX + "ViewList", "count": len(items), "views": items}

    def view(self, view_id: str, product: str | None = None,
             language: str = "en") -> dict[str, Any]:
        """One view (``@type`` ``dr.protocol.View``)."""
        lang = self._check_language(language)
        if product is not None:
            self._check_product(product)
        rec = self._get("view", view_id, product)
        return {"@type": m.TYPE_PREFIX + "View", **self._out_view(rec, lang)}

    def view_processing(self, view_id: str) -> dict[str, Any]:
        """What the exposure workflow and the image pipeline need about a view."""
        d = self._get("view", view_id).data
        return {"view_id": d["view_id"], "img_proc_id": d["img_proc_id"],
                "ImageRotate": int(d["dx"]["ImageRotate"]),
                "ImageHorizontalFlip": d["dx"]["ImageHorizontalFlip"] == "YES",
                "TargetEXI": int(d["dx"]["TargetEXI"]), "body_part": d["body_part_id"],
                "anatomic_region": d["anatomic_region"], "view_position": d["view_position"],
                "laterality": d["laterality"], "patient_type": d["patient_type"],
                "work_station_id": d["work_station_id"]}

    # --- techniques --------------------------------------------------------------

    def _apr_of(self, view_id: str, product: str | None) -> tuple[_Rec, _Rec]:
        view = self._get("view", view_id, product)
        apr = self._index.aprs.get(view.data["apr_id"])
        if apr is None:
            raise DiosError(NO_TECHNIQUE, f"view {view_id!r} has no APR")
        return view, apr

    @staticmethod
    def _station(view: _Rec, work_station_id: Any) -> int:
        if isinstance(work_station_id, bool) or not isinstance(work_station_id, int):
            raise DiosError(INVALID_FIELD, "work_station_id must be an integer")
        if work_station_id == 0:
            return int(view.data["work_station_id"])
        return m.check_choice("work_station_id", work_station_id, tuple(m.WORK_STATIONS))

    def apr(self, view_id: str, patient_size: str | None = None,
            work_station_id: int | None = None, product: str | None = None,
            language: str = "en") -> dict[str, Any]:
        """The ``AprReply`` of a view: exposures per work station and patient size.

        ``patient_size`` and ``work_station_id`` filter the exposures (``0`` = the view's
        default station); NO_TECHNIQUE when nothing is left.
        """
        lang = self._check_language(language)
        if product is not None:
            self._check_product(product)
        if patient_size is not None:
            m.check_choice("patient_size", patient_size, m.PATIENT_SIZES)
        view, apr = self._apr_of(view_id, product)
        station = None if work_station_id is None else self._station(view, work_station_id)
        a = apr.data
        exposures = [copy.deepcopy(e) for e in a["exposures"]
                     if (patient_size is None or e["patient_size"] == patient_size)
                     and (station is None or e["work_station_id"] == station)]
        if not exposures:
            raise DiosError(NO_TECHNIQUE, f"view {view_id!r}, size {patient_size}, "
                            f"work station {station}")
        return {"@type": m.TYPE_PREFIX + "AprReply", "apr_id": a["apr_id"],
                "apr_name": a["apr_id"], "apr_description": _loc(a["name"], lang),
                "patient_type": a["patient_type"], "body_part_id": a["body_part_id"],
                "view_position": a["view_position"], "category": a["category"],
                "modality": a["modality"], "exposures": exposures, "sort": a.get("sort", 0),
                "is_enabled": a.get("is_enabled", True), "product": apr.product,
                "is_pre_install": apr.pre_install}

    def apr_device(self, view_id: str, work_station_id: int,
                   product: str | None = None) -> dict[str, Any]:
        """The ``AprDevice`` of a view at a work station (SID, grid, angles ...)."""
        if product is not None:
            self._check_product(product)
        view, apr = self._apr_of(view_id, product)
        station = self._station(view, work_station_id)
        for dev in apr.data["devices"]:
            if dev["work_station_id"] == station:
                return {"@type": m.TYPE_PREFIX + "AprDevice", "work_station_id": station,
                        "config_object": copy.deepcopy(dev["config_object"])}
        raise DiosError(NO_TECHNIQUE, f"view {view_id!r} not set up for work station {station}")

    def tech_params(self, view_id: str, patient_size: str, work_station_id: int,
                    product: str | None = None) -> dict[str, Any]:
        """The ``TechParam`` of a view: ``dp`` (device/geometry) and ``ep`` (exposure)."""
        m.check_choice("patient_size", patient_size, m.PATIENT_SIZES)
        reply = self.apr(view_id, patient_size, work_station_id, product)
        common = reply["exposures"][0]["config_object"]["Common"]
        dev = self.apr_device(view_id, reply["exposures"][0]["work_station_id"],
                              product)["config_object"]["Common"]
        _, apr = self._apr_of(view_id, product)
        thickness = apr.data.get("thickness", {}).get(patient_size, dev["Thickness"])
        dp = {"SID": dev["SID"], "GridType": dev["GridType"], "GridSpeed": dev["GridSpeed"],
              "DetectorAngle": dev["DetectorAngle"], "TubeAngle": dev["TubeAngle"],
              "TubeHeight": 0, "APRNumber": dev["APRNumber"],
              "PositionNumber": dev["PositionNumber"], "Thickness": thickness,
              "FrameRate": dev["FrameRate"], "LongTimeExp": 0}
        ep = {"kV": common["kV"], "mA": common["mA"], "ms": common["ms"],
              "mAs": common["mAs"], "ExposureMode": common["ExposureMode"],
              "Focus": common["Focus"], "AECFilm": common["AECFilm"],
              "AECField": common["AECField"], "AECDensity": common["AECDensity"],
              "Dose": common["Dose"], "TubeLoad": common["TubeLoad"], "TOD": common["TOD"],
              "CompressionThickness": 0}
        return {"@type": m.TYPE_PREFIX + "TechParam", "dp": dp, "ep": ep}

    def work_stations(self, product: str = "DROS", language: str = "en") -> list[dict[str, Any]]:
        """The work stations of a product: id, name, SID, grid."""
        product, lang = self._check_product(product), self._check_language(language)
        return [{"work_station_id": k, "name": _loc(v["name"], lang), "SID": v["SID"],
                 "GridType": v["GridType"], "grid": v["grid"]}
                for k, v in sorted(self._index.stations[product].items())]

    # --- icons --------------------------------------------------------------------

    def view_icon(self, view_id: str, large: bool = False) -> bytes:
        """A PNG icon of the view (64 px, or 192 px when ``large``), cached."""
        rec = self._get("view", view_id)
        size = ICON_SIZE_LARGE if large else ICON_SIZE
        key = (view_id, size)
        png = self._icons.get(key)
        if png is None:
            d = rec.data
            png = render_icon(d.get("glyph", ""), d["view_position"], d["laterality"],
                              d["patient_type"], size)
            self._icons[key] = png
        return png

    def icon_by_name(self, name: str) -> bytes:
        """The icon named by a view's ``view_icon_name`` / ``view_big_icon_name``."""
        if not isinstance(name, str):
            raise DiosError(INVALID_FIELD, "icon name must be a string")
        base = name.rsplit("/", 1)[-1]
        large = base.endswith(".large.png")
        stem = base[: -len(".large.png")] if large else base.removesuffix(".png")
        rec = self._index.entries["view"].get(stem)
        wanted = "/" + name.lstrip("/")
        if rec is None or wanted != rec.data["icon"] + (".large.png" if large else ".png"):
            raise DiosError(CATALOG_NOT_FOUND, f"icon {name!r}")
        return self.view_icon(stem, large)

    # -------------------------------------------------------------------------------
    # Changes
    # -------------------------------------------------------------------------------

    def _commit(self, ov: dict[str, Any]) -> None:
        """Validate ``ov`` by compiling it, persist it, then make it current."""
        idx = self._compile(ov, strict=True)
        if self._path is not None:
            data = json.dumps(ov, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
            try:
                _atomic_write(self._path, data)
            except OSError as exc:
                raise DiosError(STORAGE_ERROR, f"cannot write {self._path}: {exc}") from exc
        self._ov, self._index = ov, idx
        self._icons.clear()

    @staticmethod
    def _check_kind(kind: Any) -> str:
        return m.check_choice("kind", kind, m.KINDS)

    def set_enabled(self, kind: str, entry_id: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable any entry; returns it (English)."""
        kind = self._check_kind(kind)
        m.check_bool("is_enabled", enabled)
        with self._lock:
            self._get(kind, entry_id)
            ov = copy.deepcopy(self._ov)
            ov["enabled"][kind][entry_id] = enabled
            self._commit(ov)
            return self._out(kind, self._get(kind, entry_id), "en")

    def set_sort(self, kind: str, ordered_ids: list[str]) -> None:
        """Give the listed entries the sort keys 1, 2, ... in the order given."""
        kind = self._check_kind(kind)
        if not isinstance(ordered_ids, list) or not ordered_ids:
            raise DiosError(INVALID_FIELD, "ordered_ids must be a non-empty list of ids")
        if len(set(map(str, ordered_ids))) != len(ordered_ids):
            raise DiosError(INVALID_FIELD, "ordered_ids lists an id twice")
        with self._lock:
            for eid in ordered_ids:
                self._get(kind, eid)
            ov = copy.deepcopy(self._ov)
            for i, eid in enumerate(ordered_ids, start=1):
                ov["sort"][kind][eid] = i
            self._commit(ov)

    def add_custom(self, kind: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Add a custom entry (``is_pre_install`` false); returns it (English).

        Accepted fields are those of the kind's reply shape; a procedure also takes
        ``views`` (view ids in exposure order); a view takes ``exposures`` (the APR reply's
        exposure items) or ``apr_id`` (share an existing view's technique). ``names``
        (``{"en": ..., "zh": ...}``) gives both languages at once.
        """
        kind = self._check_kind(kind)
        if not isinstance(entry, dict):
            raise DiosError(INVALID_FIELD, "entry must be an object")
        with self._lock:
            idx = self._index
            if kind == "procedure" and not entry.get("procedure_id"):
                entry = {**entry, "procedure_id": self._next_procedure_id(idx)}
            norm = self._normalise(kind, entry, idx)
            eid = norm[_ID_KEY[kind]]
            if eid in idx.entries[kind] or (kind == "view" and eid in idx.aprs):
                raise DiosError(DUPLICATE, f"{kind} {eid!r}")
            numeric = [int(r.data["id"]) for r in idx.entries[kind].values()
                       if str(r.data.get("id", "")).isdigit()]
            norm["id"] = str(max([CUSTOM_ID_BASE, *numeric]) + 1)
            ov = copy.deepcopy(self._ov)
            ov["custom"][kind].append(norm)
            if "is_enabled" in entry:
                ov["enabled"][kind][eid] = m.check_bool("is_enabled", entry["is_enabled"])
            if "sort" in entry:
                ov["sort"][kind][eid] = m.check_int("sort", entry["sort"], 0, 1_000_000)
            self._commit(ov)
            return self._out(kind, self._get(kind, eid), "en")

    def update_custom(self, kind: str, entry_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a custom entry; on a shipped entry only ``is_enabled`` and ``sort``."""
        kind = self._check_kind(kind)
        if not isinstance(changes, dict) or not changes:
            raise DiosError(INVALID_FIELD, "changes must be a non-empty object")
        with self._lock:
            rec = self._get(kind, entry_id)
            ov = copy.deepcopy(self._ov)
            rest = dict(changes)
            if "is_enabled" in rest:
                ov["enabled"][kind][entry_id] = m.check_bool("is_enabled", rest.pop("is_enabled"))
            if "sort" in rest:
                ov["sort"][kind][entry_id] = m.check_int("sort", rest.pop("sort"), 0, 1_000_000)
            if rest:
                if rec.pre_install:
                    raise DiosError(CATALOG_READONLY,
                                    f"{kind} {entry_id!r}: only is_enabled and sort can change")
                key = _ID_KEY[kind]
                if key in rest and rest[key] != entry_id:
                    raise DiosError(INVALID_FIELD, f"{key} cannot change")
                pos = next(i for i, e in enumerate(ov["custom"][kind]) if e[key] == entry_id)
                merged = {**ov["custom"][kind][pos], **rest}
                if "names" not in rest and any(
                        k.endswith(("_name", "_local", "_other_name")) for k in rest):
                    merged.pop("names", None)  # the new text replaces both languages
                merged = {k: v for k, v in merged.items() if v is not None}
                stored_id = ov["custom"][kind][pos].get("id", entry_id)
                ov["custom"][kind][pos] = self._normalise(kind, merged, self._index)
                ov["custom"][kind][pos]["id"] = stored_id
            self._commit(ov)
            return self._out(kind, self._get(kind, entry_id), "en")

    def delete_custom(self, kind: str, entry_id: str) -> None:
        """Delete a custom entry that nothing else uses; shipped entries are read-only."""
        kind = self._check_kind(kind)
        with self._lock:
            rec = self._get(kind, entry_id)
            if rec.pre_install:
                raise DiosError(CATALOG_READONLY, f"{kind} {entry_id!r} is pre-installed")
            users = self._users(kind, entry_id)
            if users:
                raise DiosError(INVALID_FIELD, f"{kind} {entry_id!r} is used by {users[0]}")
            key = _ID_KEY[kind]
            ov = copy.deepcopy(self._ov)
            ov["custom"][kind] = [e for e in ov["custom"][kind] if e[key] != entry_id]
            ov["enabled"][kind].pop(entry_id, None)
            ov["sort"][kind].pop(entry_id, None)
            self._commit(ov)

    @staticmethod
    def _next_procedure_id(idx: _Index) -> str:
        n = 1
        while f"PC-{n:04d}" in idx.entries["procedure"]:
            n += 1
        return f"PC-{n:04d}"

    def _users(self, kind: str, eid: str) -> list[str]:
        ent = self._index.entries
        if kind == "patient_type":
            return [f"body_part {k}" for k, r in ent["body_part"].items()
                    if r.data["patient_type"] == eid]
        if kind == "body_part":
            return [f"{k2} {k}" for k2 in ("procedure", "view") for k, r in ent[k2].items()
                    if r.data["body_part_id"] == eid]
        if kind == "view":
            return ([f"procedure {k}" for k, r in ent["procedure"].items()
                     if eid in r.data["views"]]
                    + [f"view {k}" for k, r in ent["view"].items()
                       if k != eid and r.data["apr_id"] == eid])
        return []

    # -------------------------------------------------------------------------------
    # Custom entry validation
    # -------------------------------------------------------------------------------

    _ALLOWED = {
        "patient_type": {"patient_type_id", "patient_type_name", "patient_type_local",
                         "patient_type_description", "product"},
        "body_part": {"body_part_id", "body_part_name", "body_part_local",
                      "body_part_description", "patient_type", "category", "product"},
        "procedure": {"procedure_id", "procedure_code", "procedure_name",
                      "procedure_name_local", "procedure_other_name", "procedure_description",
                      "procedure_description_local", "patient_type", "body_part_id",
                      "procedure_type", "fast_search", "protocol_laterality",
                      "procedure_category", "modality", "views", "product"},
        "view": {"view_id", "internal_id", "view_name", "view_name_local", "view_other_name",
                 "view_description", "view_position", "application", "anatomic_region",
                 "patient_type", "body_part_id", "modality", "work_station_id", "apr_id",
                 "img_proc_id", "config_object", "exposures", "product", "laterality"},
    }
    _IGNORED = {"id", "sort", "is_enabled", "is_pre_install", "@type", "names",
                "view_icon_name", "view_big_icon_name", "view_coach_name"}

    def _normalise(self, kind: str, entry: dict[str, Any], idx: _Index) -> dict[str, Any]:
        """Validate a custom entry and return its stored form (raises DiosError)."""
        unknown = set(entry) - self._ALLOWED[kind] - self._IGNORED
        if unknown:
            raise DiosError(INVALID_FIELD, f"unknown field {sorted(unknown)[0]!r}")
        key = _ID_KEY[kind]
        eid = m.check_id(key, m.require(entry, key))
        name = m.check_str(f"{kind}_name", m.require(entry, f"{kind}_name"), empty=False)
        names = entry.get("names")
        if names is not None:
            if not isinstance(names, dict) or not names or set(names) - set(m.LANGUAGES):
                raise DiosError(INVALID_FIELD, "names must map en/zh to text")
            for lang, text in names.items():
                m.check_str(f"names.{lang}", text, empty=False)
        out: dict[str, Any] = {key: eid, f"{kind}_name": name}
        if names is not None:
            out["names"] = dict(names)
        for opt in self._ALLOWED[kind] - {key, f"{kind}_name", "views", "exposures",
                                          "config_object", "fast_search", "work_station_id",
                                          "product"}:
            if opt in entry and entry[opt] is not None:
                out[opt] = m.check_str(opt, entry[opt])
        if "product" in entry:
            out["product"] = self._check_product(entry["product"])
        ent = idx.entries
        if kind == "patient_type":
            out.setdefault("product", "DROS")
        elif kind == "body_part":
            pt = ent["patient_type"].get(m.require(entry, "patient_type"))
            if pt is None:
                raise DiosError(INVALID_FIELD, f"patient_type {entry['patient_type']!r} unknown")
            self._same_product(out, pt.product)
            out["category"] = m.check_choice("category", out.get("category", "DX"),
                                             ("DX", "RF", "CR"))
        elif kind == "procedure":
            bp = self._parent_body_part(entry, out, ent)
            views = m.require(entry, "views")
            if not isinstance(views, list) or not views or len(views) > 64:
                raise DiosError(INVALID_FIELD, "views must be a list of 1-64 view ids")
            for vid in views:
                v = ent["view"].get(vid) if isinstance(vid, str) else None
                if v is None:
                    raise DiosError(INVALID_FIELD, f"view {vid!r} unknown")
                if v.product != bp.product or v.data["patient_type"] != bp.data["patient_type"]:
                    raise DiosError(INVALID_FIELD, f"view {vid!r} is of another patient type")
            out["views"] = list(views)
            out["fast_search"] = m.check_bool("fast_search", entry.get("fast_search", False))
            out["protocol_laterality"] = m.check_choice(
                "protocol_laterality", out.get("protocol_laterality", "U"), m.LATERALITIES)
            out["procedure_category"] = m.check_choice(
                "procedure_category", out.get("procedure_category", "Adult"),
                ("Adult", "Pediatric"))
            out["modality"] = m.check_choice("modality", out.get("modality", "DX"), ("DX",))
            out.setdefault("procedure_type", "NORMAL")
            out["procedure_code"] = m.check_id("procedure_code", out.get("procedure_code", eid))
        else:
            self._normalise_view(entry, out, idx)
        return out

    def _parent_body_part(self, entry: dict[str, Any], out: dict[str, Any],
                          ent: dict[str, dict[str, _Rec]]) -> _Rec:
        bp = ent["body_part"].get(m.require(entry, "body_part_id"))
        if bp is None:
            raise DiosError(INVALID_FIELD, f"body_part_id {entry['body_part_id']!r} unknown")
        if "patient_type" in out and out["patient_type"] != bp.data["patient_type"]:
            raise DiosError(INVALID_FIELD, "patient_type differs from the body part's")
        out["body_part_id"] = bp.data["body_part_id"]
        out["patient_type"] = bp.data["patient_type"]
        self._same_product(out, bp.product)
        return bp

    @staticmethod
    def _same_product(out: dict[str, Any], product: str) -> None:
        if out.get("product", product) != product:
            raise DiosError(INVALID_FIELD, f"product must be {product}, as the parent's")
        out["product"] = product

    def _normalise_view(self, entry: dict[str, Any], out: dict[str, Any], idx: _Index) -> None:
        ent = idx.entries
        self._parent_body_part(entry, out, ent)
        m.check_str("view_position", m.require(entry, "view_position"), max_len=16, empty=False)
        if "internal_id" in out and out["internal_id"] != out["view_id"]:
            raise DiosError(INVALID_FIELD, "internal_id must equal view_id")
        out.pop("internal_id", None)
        out["img_proc_id"] = m.check_choice("img_proc_id", out.get("img_proc_id", "default"),
                                            m.PROFILES)
        out["laterality"] = m.check_choice("laterality", out.get("laterality", "U"),
                                           m.LATERALITIES)
        out["modality"] = m.check_choice("modality", out.get("modality", "DX"), ("DX",))
        out["application"] = m.check_choice("application", out.get("application", "RAD"),
                                            ("RAD",))
        exposures = entry.get("exposures")
        apr_id = entry.get("apr_id")
        if apr_id == out["view_id"]:
            apr_id = None  # the view's own APR: its exposures, or none yet
        if exposures is not None and apr_id is not None:
            raise DiosError(INVALID_FIELD, "give either exposures or apr_id of another view")
        if exposures is not None:
            out["exposures"] = self._check_exposures(exposures)
            out["apr_id"] = out["view_id"]
            stations = sorted({e["work_station_id"] for e in out["exposures"]})
        elif apr_id is not None:
            apr = idx.aprs.get(apr_id) if isinstance(apr_id, str) else None
            if apr is None:
                raise DiosError(INVALID_FIELD, f"apr_id {apr_id!r} unknown")
            if apr.product != out["product"]:
                raise DiosError(INVALID_FIELD, "apr_id belongs to the other product")
            out["apr_id"] = apr_id
            stations = sorted({e["work_station_id"] for e in apr.data["exposures"]})
        else:
            out["apr_id"] = out["view_id"]
            stations = []
        ws = entry.get("work_station_id", stations[0] if stations else 1)
        out["work_station_id"] = m.check_choice("work_station_id", ws, tuple(m.WORK_STATIONS))
        dx_in = entry.get("config_object", {})
        if not isinstance(dx_in, dict) or set(dx_in) - {"DX"} or not isinstance(
                dx_in.get("DX", {}), dict):
            raise DiosError(INVALID_FIELD, "config_object must be {\"DX\": {...}}")
        dx = dx_in.get("DX", {})
        bad = set(dx) - set(m.VIEW_DX_KEYS)
        if bad:
            raise DiosError(INVALID_FIELD, f"unknown config_object.DX field {sorted(bad)[0]!r}")
        norm: dict[str, Any] = {}
        for k, v in dx.items():
            f = f"config_object.DX.{k}"
            if k == "ImageRotate":
                norm[k] = m.check_choice(f, v, m.ROTATIONS)
            elif k == "ImageHorizontalFlip":
                norm[k] = m.check_choice(f, v, ("YES", "NO"))
            elif k == "ImageLaterality":
                norm[k] = m.check_choice(f, v, m.LATERALITIES)
            elif k == "TargetEXI":
                norm[k] = m.check_int(f, v, *m.TARGET_EXI_RANGE)
            elif k == "CollimatorNoChange":
                norm[k] = m.check_bool(f, v)
            elif k.startswith("RatioFactor"):
                norm[k] = m.check_int(f, v, 0, 1000)
            elif k == "ViewID":
                if v != out["view_id"]:
                    raise DiosError(INVALID_FIELD, f"{f} must equal view_id")
            else:
                norm[k] = m.check_str(f, v, max_len=64)
        if "ImageLaterality" in norm and "laterality" not in entry:
            out["laterality"] = norm["ImageLaterality"]
        out["config_object"] = {"DX": norm}

    @staticmethod
    def _check_exposures(exposures: Any) -> list[dict[str, Any]]:
        if not isinstance(exposures, list) or not exposures or len(exposures) > 64:
            raise DiosError(INVALID_FIELD, "exposures must be a list of 1-64 items")
        out, seen = [], set()
        for i, e in enumerate(exposures):
            f = f"exposures[{i}]"
            if not isinstance(e, dict):
                raise DiosError(INVALID_FIELD, f"{f} must be an object")
            ws = m.check_choice(f"{f}.work_station_id", m.require(e, "work_station_id"),
                                tuple(m.WORK_STATIONS))
            size = m.check_choice(f"{f}.patient_size", m.require(e, "patient_size"),
                                  m.PATIENT_SIZES)
            if (ws, size) in seen:
                raise DiosError(INVALID_FIELD, f"{f}: work station {ws} size {size} twice")
            seen.add((ws, size))
            co = m.require(e, "config_object")
            if not isinstance(co, dict):
                raise DiosError(INVALID_FIELD, f"{f}.config_object must be an object")
            common = m.check_exposure_common(f"{f}.config_object.Common",
                                             m.require(co, "Common"))
            out.append({"work_station_id": ws, "patient_size": size,
                        "config_object": {"Common": common}})
        out.sort(key=lambda e: (e["work_station_id"], e["patient_size"]))
        return out

    def _internal(self, kind: str, e: dict[str, Any],
                  idx: _Index) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
        """A stored custom entry as an internal record (and its APR for a view)."""
        key = _ID_KEY[kind]
        name = e[f"{kind}_name"]
        local = e.get(f"{kind}_name_local") or e.get(f"{kind}_local") or name
        names = e.get("names") or {"en": e.get(f"{kind}_other_name") or name, "zh": local}
        ent = idx.entries
        if kind == "patient_type":
            rec = {"id": e.get("id", e[key]), key: e[key], "name": names,
                   "description": e.get("patient_type_description", "")}
            return rec, e["product"], None
        if kind == "body_part":
            pt = ent["patient_type"].get(e["patient_type"])
            if pt is None:
                raise DiosError(INVALID_FIELD, f"patient_type {e['patient_type']!r} unknown")
            rec = {"id": e.get("id", e[key]), key: e[key], "name": names,
                   "description": e.get("body_part_description", ""),
                   "patient_type": e["patient_type"], "category": e.get("category", "DX")}
            return rec, pt.product, None
        bp = ent["body_part"].get(e["body_part_id"])
        if bp is None:
            raise DiosError(INVALID_FIELD, f"body_part_id {e['body_part_id']!r} unknown")
        if kind == "procedure":
            for vid in e["views"]:
                if vid not in ent["view"]:
                    raise DiosError(INVALID_FIELD, f"view {vid!r} unknown")
            rec = {"id": e.get("id", e[key]), key: e[key], "procedure_code": e["procedure_code"],
                   "name": names, "patient_type": bp.data["patient_type"],
                   "body_part_id": e["body_part_id"], "procedure_type": e["procedure_type"],
                   "fast_search": e["fast_search"],
                   "protocol_laterality": e["protocol_laterality"],
                   "procedure_category": e["procedure_category"], "modality": e["modality"],
                   "views": list(e["views"])}
            return rec, bp.product, None
        vid = e[key]
        dx = {"CollimatorCenter": "1", "CollimatorFilter": "0", "CollimatorNoChange": False,
              "CollimatorSize": "14IN(35CM)X17IN(43CM)", "CollimatorSizeLength": "17IN",
              "CollimatorSizeWidth": "14IN", "ImageHorizontalFlip": "NO",
              "ImageLaterality": e["laterality"], "ImageRotate": "0",
              "LabelPosition": "LEFT TOP", "LabelStyle": "", "PatientOrientationColumn": "F",
              "PatientOrientationRow": "L", "RatioFactorLength": 0, "RatioFactorSize": 0,
              "RatioFactorThickness": 0, "RatioFactorWeight": 0, "StandPos": "43",
              "TargetEXI": 300, **e["config_object"]["DX"]}
        pt = bp.data["patient_type"]
        rec = {"view_id": vid, "name": names, "view_position": e["view_position"],
               "application": e["application"],
               "anatomic_region": e.get("anatomic_region") or _loc(bp.data["name"], "en").upper(),
               "patient_type": pt, "body_part_id": e["body_part_id"],
               "icon": f"/Image/Position/{pt}/{vid}", "modality": e["modality"],
               "glyph": next((r.data.get("glyph", "") for r in ent["view"].values()
                              if r.data["body_part_id"] == e["body_part_id"]), ""),
               "work_station_id": e["work_station_id"], "apr_id": e["apr_id"],
               "img_proc_id": e["img_proc_id"], "laterality": e["laterality"], "dx": dx}
        apr = None
        if "exposures" in e:
            stations = idx.stations[bp.product]
            apr = {"apr_id": vid, "name": names, "patient_type": pt,
                   "body_part_id": e["body_part_id"], "view_position": e["view_position"],
                   "category": "CUSTOM", "modality": "DX", "exposures": e["exposures"],
                   "devices": [{"work_station_id": ws, "config_object": {"Common": {
                       "APRNumber": "0", "DetectorAngle": 0, "FpdAcquisitionMode": "101",
                       "FrameRate": 0, "GridSpeed": 0, "GridType": stations[ws]["GridType"],
                       "PositionNumber": stations[ws]["PositionNumber"],
                       "SID": stations[ws]["SID"], "Thickness": 1, "TubeAngle": 0}}}
                       for ws in sorted({x["work_station_id"] for x in e["exposures"]})],
                   "sort": 0, "is_enabled": True}
        elif e["apr_id"] != vid and e["apr_id"] not in idx.aprs:
            raise DiosError(INVALID_FIELD, f"apr_id {e['apr_id']!r} unknown")
        return rec, bp.product, apr
