"""The protocol catalog: shipped data, reply shapes, techniques, overrides, errors."""

from __future__ import annotations

import io
import json
import math
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dios import codes
from dios.catalog import build_catalog
from dios.catalog import model as m
from dios.catalog import service as service_mod
from dios.catalog.service import OVERRIDES_FILE, CatalogService
from dios.codes import DiosError


@pytest.fixture(scope="module")
def cat() -> CatalogService:
    return CatalogService()


def code_of(fn, *args, **kwargs) -> codes.ResultCode:
    with pytest.raises(DiosError) as exc:
        fn(*args, **kwargs)
    return exc.value.code


# ---------------------------------------------------------------------------------------
# Seed example replies (the reference console API), one item per list
# ---------------------------------------------------------------------------------------

SEED_PATIENT_TYPE = {"id": "1", "patient_type_id": "Human", "patient_type_name": "Human",
                     "patient_type_local": "Human", "patient_type_description": "Human",
                     "sort": 1, "is_enabled": True, "product": "DROC", "is_pre_install": True}
SEED_BODY_PART = {"id": "1", "body_part_id": "Human_SKULL", "body_part_name": "颅骨",
                  "body_part_local": "颅骨", "body_part_description": "Skull",
                  "patient_type": "Human", "category": "DX", "sort": 1, "is_enabled": True,
                  "product": "DROC", "is_pre_install": True}
SEED_PROCEDURE_LIST = {
    "@type": "type.googleapis.com/dr.protocol.ProcedureList", "count": 179,
    "procedures": [{
        "id": "2", "procedure_id": "P0-0002", "procedure_code": "P0-0002",
        "procedure_name": "颅骨前后位 + 侧位", "procedure_name_local": "颅骨前后位 + 侧位",
        "procedure_other_name": "Skull AP + LAT", "procedure_description": "颅骨前后位 + 侧位",
        "procedure_description_local": "颅骨前后位 + 侧位", "patient_type": "Human",
        "body_part_id": "Human_SKULL", "procedure_type": "NORMAL", "fast_search": False,
        "protocol_laterality": "U", "procedure_category": "Adult", "modality": "DX",
        "sort": 1, "is_enabled": True, "product": "DROS", "is_pre_install": True}]}
_SEED_VIEW_ITEM = {
    "internal_id": "View_DX_T_A_SK_AP_00", "view_id": "View_DX_T_A_SK_AP_00",
    "view_name": "颅骨前后位", "view_name_local": "", "view_other_name": "Skull AP",
    "view_description": "颅骨前后位", "view_position": "AP", "application": "RAD",
    "anatomic_region": "SKULL", "patient_type": "Human", "body_part_id": "Human_SKULL",
    "view_icon_name": "/Image/Position/Human/skull.ap.table.x.png",
    "view_big_icon_name": "/Image/Position/Human/skull.ap.table.x.png",
    "view_coach_name": "/Image/Position/Human/skull.ap.table.x.png", "modality": "DX",
    "work_station_id": 0, "apr_id": "View_DX_T_A_SK_AP_00",
    "img_proc_id": "View_DX_T_A_SK_AP_00",
    "config_object": {"DX": {
        "CollimatorCenter": "1", "CollimatorFilter": "0", "CollimatorNoChange": False,
        "CollimatorSize": "14IN(35CM)X17IN(43CM)", "CollimatorSizeLength": "17IN",
        "CollimatorSizeWidth": "14IN", "ImageHorizontalFlip": "NO", "ImageLaterality": "U",
        "ImageRotate": "0", "LabelPosition": "LEFT TOP", "LabelStyle": "",
        "PatientOrientationColumn": "R", "PatientOrientationRow": "L", "RatioFactorLength": 0,
        "RatioFactorSize": 0, "RatioFactorThickness": 0, "RatioFactorWeight": 0,
        "StandPos": "43", "TargetEXI": 250, "ViewID": "View_DX_T_A_SK_AP_00"}},
    "sort": 1, "is_enabled": True, "product": "DROS", "is_pre_install": True}
SEED_VIEW_LIST = {"@type": "type.googleapis.com/dr.protocol.ViewList", "count": 2,
                  "views": [_SEED_VIEW_ITEM]}
SEED_VIEW = {"@type": "type.googleapis.com/dr.protocol.View", **_SEED_VIEW_ITEM}
SEED_APR = {
    "@type": "type.googleapis.com/dr.protocol.AprReply", "apr_id": "View_DX_T_A_HD_OBL_01",
    "apr_name": "View_DX_T_A_HD_OBL_01", "apr_description": "右手斜位",
    "patient_type": "Human", "body_part_id": "Human_UPPER LIMB", "view_position": "OBL",
    "category": "EXTREMITIES_MEDIUM", "modality": "DX",
    "exposures": [{"work_station_id": 0, "patient_size": "Large", "config_object": {"Common": {
        "AECDensity": 0, "AECField": "010", "AECFilm": 1, "Dose": 0, "ExposureMode": 0,
        "Focus": 0, "TOD": 0, "TubeLoad": 0, "kV": 55, "mA": 80, "mAs": 3.2, "ms": 40}}}],
    "sort": 0, "is_enabled": True, "product": "DROS", "is_pre_install": True}
SEED_APR_DEVICE = {
    "@type": "type.googleapis.com/dr.protocol.AprDevice", "work_station_id": 1,
    "config_object": {"Common": {
        "APRNumber": "5", "DetectorAngle": 0, "FpdAcquisitionMode": "101", "FrameRate": 0,
        "GridSpeed": 0, "GridType": 2, "PositionNumber": "2", "SID": 115, "Thickness": 1,
        "TubeAngle": 0}}}
SEED_TECH_PARAM = {
    "@type": "type.googleapis.com/dr.protocol.TechParam",
    "dp": {"SID": 115, "GridType": 2, "GridSpeed": 0, "DetectorAngle": 0, "TubeAngle": 0,
           "TubeHeight": 0, "APRNumber": "5", "PositionNumber": "2", "Thickness": 1,
           "FrameRate": 0, "LongTimeExp": 0},
    "ep": {"kV": 70, "mA": 125, "ms": 100, "mAs": 12.5, "ExposureMode": 0, "Focus": 0,
           "AECFilm": 1, "AECField": "010", "AECDensity": 0, "Dose": 0, "TubeLoad": 0,
           "TOD": 0, "CompressionThickness": 0}}

#: physical quantities: int in one example, float in another; any JSON number is right
NUMBER_KEYS = {"kV", "mA", "ms", "mAs", "Dose", "TOD", "TubeLoad"}


def assert_shape(ours: Any, seed: Any, path: str = "$") -> None:
    """Same keys at every level, same JSON value types (ints stay ints)."""
    if isinstance(seed, dict):
        assert isinstance(ours, dict), path
        assert set(ours) == set(seed), (path, set(ours) ^ set(seed))
        for k in seed:
            assert_shape(ours[k], seed[k], f"{path}.{k}")
    elif isinstance(seed, list):
        assert isinstance(ours, list) and ours, path
        for i, item in enumerate(ours):
            assert_shape(item, seed[0], f"{path}[{i}]")
    elif isinstance(seed, bool):
        assert isinstance(ours, bool), path
    elif isinstance(seed, (int, float)):
        assert isinstance(ours, (int, float)) and not isinstance(ours, bool), path
        if isinstance(seed, int) and path.rsplit(".", 1)[-1] not in NUMBER_KEYS:
            assert isinstance(ours, int), f"{path} must be an int"
    elif isinstance(seed, str):
        assert isinstance(ours, str), path
    else:
        assert ours is seed, path


def test_reply_shapes_match_seed(cat: CatalogService) -> None:
    for product in m.PRODUCTS:
        for lang in m.LANGUAGES:
            assert_shape(cat.patient_type_list(product, lang),
                         {"patient_type_list": [SEED_PATIENT_TYPE]})
            assert_shape(cat.body_part_list(product=product, language=lang),
                         {"body_part_list": [SEED_BODY_PART]})
            assert_shape(cat.procedure_list(product=product, language=lang),
                         SEED_PROCEDURE_LIST)
            views = cat.view_list(product=product, language=lang)
            assert_shape(views, SEED_VIEW_LIST)
            for v in views["views"]:
                assert_shape(cat.view(v["view_id"], language=lang), SEED_VIEW)
                assert_shape(cat.apr(v["view_id"], language=lang), SEED_APR)
                for ws in {e["work_station_id"] for e in cat.apr(v["view_id"])["exposures"]}:
                    assert_shape(cat.apr_device(v["view_id"], ws), SEED_APR_DEVICE)
                    assert_shape(cat.tech_params(v["view_id"], "Medium", ws), SEED_TECH_PARAM)


def test_seed_example_entries_are_kept(cat: CatalogService) -> None:
    p = cat.procedure("P0-0002", language="zh")
    assert (p["procedure_name"], p["procedure_other_name"]) == ("颅骨前后位 + 侧位",
                                                                "Skull AP + LAT")
    assert cat.procedure_view_ids("P0-0002") == ["View_DX_T_A_SK_AP_00", "View_DX_T_A_SK_LAT_00"]
    assert cat.procedure("P0-0001")["procedure_other_name"] == "Skull Townes View"
    for vid, zh in [("View_DX_T_A_SK_AP_00", "颅骨前后位"), ("View_DX_T_A_SK_LAT_00", "颅骨左侧位"),
                    ("View_DX_T_A_SK_Axial_00", "颅骨前后轴位"), ("View_DX_T_A_SK_Axial_04",
                                                                "下颌骨, 闭口"),
                    ("View_DX_T_A_SK_Special_04", "颅骨汤氏位"),
                    ("View_DX_T_A_SK_Special_05", "颅骨斯氏位"),
                    ("View_DX_T_A_HD_OBL_01", "右手斜位")]:
        assert cat.view(vid, language="zh")["view_name"] == zh
    apr = cat.apr("View_DX_T_A_HD_OBL_01", "Medium", 3)
    common = apr["exposures"][0]["config_object"]["Common"]
    assert (common["kV"], common["mA"], common["ms"], common["mAs"]) == (50, 80, 25, 2)
    assert apr["body_part_id"] == "Human_UPPER LIMB"


# ---------------------------------------------------------------------------------------
# Shipped data
# ---------------------------------------------------------------------------------------


def test_shipped_files_match_the_charts() -> None:
    for product, name in build_catalog.FILES.items():
        shipped = (Path(build_catalog.__file__).with_name("data") / name).read_bytes()
        assert shipped == build_catalog.render(product), f"rebuild {name}"


def test_human_catalog_minimums(cat: CatalogService) -> None:
    assert [t["patient_type_id"] for t in cat.patient_types("DROS")] == ["Human"]
    assert len(cat.body_parts(product="DROS")) >= 12
    assert len(cat.views(product="DROS")) >= 40
    procs = cat.procedures(product="DROS")
    assert len(procs) >= 30
    names = " | ".join(p["procedure_other_name"].lower() for p in procs)
    for needed in ("skull", "cervical spine", "thoracic spine", "lumbar spine", "chest pa",
                   "chest pa + lat", "abdomen", "pelvis", "shoulder", "elbow", "hand", "wrist",
                   "hip", "knee", "ankle", "foot"):
        assert needed in names, needed


def test_veterinary_catalog_minimums(cat: CatalogService) -> None:
    assert {t["patient_type_id"] for t in cat.patient_types("VETDROS")} == {"Dog", "Cat"}
    for species in ("Dog", "Cat"):
        parts = " ".join(b["body_part_id"] for b in cat.body_parts(species, product="VETDROS"))
        for region in ("THORAX", "ABDOMEN", "PELVIS", "SKULL", "SPINE", "FORELIMB", "HINDLIMB"):
            assert region in parts, (species, region)
    assert len(cat.body_parts(product="VETDROS")) >= 12
    assert len(cat.views(product="VETDROS")) >= 40
    assert len(cat.procedures(product="VETDROS")) >= 30


@pytest.mark.parametrize("product", m.PRODUCTS)
def test_procedures_reference_existing_views(cat: CatalogService, product: str) -> None:
    for p in cat.procedures(product=product):
        views = cat.views(procedure_id=p["procedure_id"], product=product)
        assert [v["view_id"] for v in views] == cat.procedure_view_ids(p["procedure_id"])
        for v in views:
            assert v["patient_type"] == p["patient_type"]
            assert v["product"] == product
        if p["protocol_laterality"] in ("L", "R"):
            assert all(cat.view_processing(v["view_id"])["laterality"] ==
                       p["protocol_laterality"] for v in views)


def test_ids_unique_and_in_seed_style(cat: CatalogService) -> None:
    for product in m.PRODUCTS:
        for kind, items, key in (("body_part", cat.body_parts(product=product), "body_part_id"),
                                 ("procedure", cat.procedures(product=product), "procedure_id"),
                                 ("view", cat.views(product=product), "view_id")):
            ids = [i[key] for i in items]
            assert len(ids) == len(set(ids)), kind
            assert len({i.get("id", i[key]) for i in items}) == len(items)
        for p in cat.procedures(product=product):
            assert re.fullmatch(r"P\d-\d{4}", p["procedure_id"])
        for v in cat.views(product=product):
            assert re.fullmatch(r"View_DX_[TV]_[APDC]_[A-Z]{2}_[A-Za-z]+_\d\d", v["view_id"])
            assert v["body_part_id"].startswith(v["patient_type"] + "_")


def _signal(c: dict[str, Any]) -> float:
    """Relative detector signal of a technique (mAs x kV^5, the 15 % rule)."""
    return c["mAs"] * c["kV"] ** 5


@pytest.mark.parametrize("product", m.PRODUCTS)
def test_every_view_has_a_valid_technique_everywhere(cat: CatalogService, product: str) -> None:
    for v in cat.views(product=product):
        apr = cat.apr(v["view_id"])
        by = {(e["work_station_id"], e["patient_size"]): e["config_object"]["Common"]
              for e in apr["exposures"]}
        stations = {ws for ws, _ in by}
        assert stations == set(m.WORK_STATIONS) and v["work_station_id"] in stations
        assert len(by) == len(apr["exposures"]) == 4 * len(stations)
        for ws in stations:
            for size in m.PATIENT_SIZES:
                c = by[(ws, size)]
                assert 40 <= c["kV"] <= 150
                assert 10 <= c["mA"] <= m.FOCUS_MA_MAX[c["Focus"]]
                assert 1 <= c["ms"] <= 10000
                assert 0.1 <= c["mAs"] <= 1000
                assert math.isclose(c["mAs"], c["mA"] * c["ms"] / 1000, rel_tol=m.MAS_TOLERANCE)
                assert c["kV"] * c["mA"] <= 80_000
                assert c["mA"] in m.MA_TABLE and c["ms"] in m.MS_TABLE
                assert c["mAs"] in m.MAS_TABLE
                assert re.fullmatch(r"[01]{3}", c["AECField"])
            s = [_signal(by[(ws, z)]) for z in ("Large", "Medium", "Small", "Paediatric")]
            assert s == sorted(s, reverse=True), (v["view_id"], ws)
            dev = cat.apr_device(v["view_id"], ws)["config_object"]["Common"]
            assert dev["GridType"] == (0 if ws == 3 else 2)
            assert dev["SID"] in (100, 115, 180)


def test_station_physics(cat: CatalogService) -> None:
    # chest PA: 180 cm on the wall stand; the free detector has no grid, so less mAs
    assert cat.apr_device("View_DX_T_A_CH_PA_00", 2)["config_object"]["Common"]["SID"] == 180
    wall = cat.tech_params("View_DX_T_A_CH_PA_00", "Medium", 2)["ep"]
    free = cat.tech_params("View_DX_T_A_CH_PA_00", "Medium", 3)["ep"]
    assert free["kV"] < wall["kV"] and _signal(free) < _signal(wall)
    # a hand in the table Bucky needs about Bucky factor x SID^2 more mAs than table-top
    bucky = cat.tech_params("View_DX_T_A_HD_PA_01", "Medium", 1)["ep"]
    top = cat.tech_params("View_DX_T_A_HD_PA_01", "Medium", 3)["ep"]
    ratio = bucky["mAs"] / top["mAs"]
    assert 4 * 1.15**2 / 1.3 < ratio < 4 * 1.15**2 * 1.3
    # a chest PA on the table (115 cm) needs less than on the wall stand (180 cm)
    table = cat.tech_params("View_DX_T_A_CH_PA_00", "Medium", 1)["ep"]
    assert table["kV"] == wall["kV"] and table["mAs"] < wall["mAs"]


def test_partial_custom_technique(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    only_free = [e for e in _custom_exposures() if e["work_station_id"] == 3]
    cat.add_custom("view", _view(exposures=only_free))
    vid = "View_DX_T_A_XX_AP_00"
    assert cat.view(vid)["work_station_id"] == 3
    assert len(cat.apr(vid, None, 0)["exposures"]) == 4
    assert code_of(cat.apr, vid, None, 1) is codes.NO_TECHNIQUE
    assert code_of(cat.apr_device, vid, 1) is codes.NO_TECHNIQUE
    assert code_of(cat.tech_params, vid, "Large", 2) is codes.NO_TECHNIQUE
    assert cat.apr_device(vid, 3)["config_object"]["Common"]["GridType"] == 0


def test_apr_filters_and_tech_params(cat: CatalogService) -> None:
    vid = "View_DX_T_A_LS_LAT_00"
    one = cat.apr(vid, "Large", 2)["exposures"]
    assert len(one) == 1 and one[0]["work_station_id"] == 2
    assert len(cat.apr(vid, "Large")["exposures"]) == 3
    default = cat.view(vid)["work_station_id"]
    assert cat.apr(vid, "Small", 0)["exposures"] == cat.apr(vid, "Small", default)["exposures"]
    tp = cat.tech_params(vid, "Large", 1)
    c = cat.apr(vid, "Large", 1)["exposures"][0]["config_object"]["Common"]
    assert {k: tp["ep"][k] for k in c} == c
    dev = cat.apr_device(vid, 1)["config_object"]["Common"]
    assert tp["dp"]["SID"] == dev["SID"] and tp["dp"]["GridType"] == dev["GridType"]
    assert tp["dp"]["Thickness"] > cat.tech_params(vid, "Paediatric", 1)["dp"]["Thickness"]


def test_view_processing_settings(cat: CatalogService) -> None:
    for product in m.PRODUCTS:
        for v in cat.views(product=product):
            p = cat.view_processing(v["view_id"])
            assert p["img_proc_id"] in m.PROFILES
            assert p["ImageRotate"] in (0, 90, 180, 270)
            assert isinstance(p["ImageHorizontalFlip"], bool)
            assert m.TARGET_EXI_RANGE[0] <= p["TargetEXI"] <= m.TARGET_EXI_RANGE[1]
            assert p["TargetEXI"] == v["config_object"]["DX"]["TargetEXI"]
            assert p["laterality"] in m.LATERALITIES
            assert p["ImageHorizontalFlip"] == (v["view_position"] in ("PA", "DV"))
    used = {cat.view_processing(v["view_id"])["img_proc_id"]
            for product in m.PRODUCTS for v in cat.views(product=product)}
    assert set(m.PROFILES) - {"default"} <= used <= set(m.PROFILES)
    assert cat.view_processing("View_DX_T_A_CH_PA_00")["img_proc_id"] == "chest"
    assert cat.view_processing("View_DX_T_P_CH_AP_00")["img_proc_id"] == "pediatric"
    assert cat.view_processing("View_DX_V_D_TH_LAT_01")["ImageRotate"] == 270


def test_language_switch(cat: CatalogService) -> None:
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for product in m.PRODUCTS:
        en = cat.views(product=product, language="en")
        zh = cat.views(product=product, language="zh")
        assert [v["view_id"] for v in en] == [v["view_id"] for v in zh]
        for a, b in zip(en, zh):
            assert not cjk.search(a["view_name"]) and cjk.search(b["view_name"])
            assert a["view_other_name"] == b["view_other_name"] == a["view_name"]
            assert b["view_name_local"] == b["view_description"] == b["view_name"]
        for a, b in zip(cat.body_parts(product=product), cat.body_parts(product=product,
                                                                        language="zh")):
            assert cjk.search(b["body_part_name"]) and not cjk.search(a["body_part_name"])
            assert b["body_part_description"] == a["body_part_name"]
        for a, b in zip(cat.procedures(product=product),
                        cat.procedures(product=product, language="zh")):
            assert cjk.search(b["procedure_name"]) and b["procedure_other_name"] == a[
                "procedure_name"]
    assert cat.apr("View_DX_T_A_HD_OBL_01", language="en")["apr_description"] == "Hand OBL,right"
    assert cat.patient_types("VETDROS", "zh")[0]["patient_type_name"] == "犬"


def test_product_filter(cat: CatalogService) -> None:
    assert {b["patient_type"] for b in cat.body_parts(product="DROS")} == {"Human"}
    assert {b["patient_type"] for b in cat.body_parts(product="VETDROS")} == {"Dog", "Cat"}
    assert all(v["product"] == "VETDROS" for v in cat.views(product="VETDROS"))
    assert code_of(cat.view, "View_DX_V_D_TH_VD_00", "DROS") is codes.CATALOG_NOT_FOUND
    assert cat.view("View_DX_V_D_TH_VD_00", "VETDROS")["product"] == "VETDROS"
    assert code_of(cat.procedures, "Dog_THORAX", "DROS") is codes.CATALOG_NOT_FOUND
    assert code_of(cat.body_parts, "Human", "VETDROS") is codes.CATALOG_NOT_FOUND
    dog = cat.body_parts("Dog", product="VETDROS")
    assert dog and all(b["patient_type"] == "Dog" for b in dog)
    chest = cat.views(body_part="Human_CHEST")
    assert chest and all(v["body_part_id"] == "Human_CHEST" for v in chest)


def test_icons(cat: CatalogService) -> None:
    a = cat.view_icon("View_DX_T_A_HD_OBL_01")
    b = cat.view_icon("View_DX_T_A_HD_OBL_00")
    big = cat.view_icon("View_DX_T_A_HD_OBL_01", large=True)
    assert a.startswith(b"\x89PNG\r\n\x1a\n") and a != b and len(big) > len(a)
    assert cat.view_icon("View_DX_T_A_HD_OBL_01") is a  # cached
    assert Image.open(io.BytesIO(a)).size == (64, 64)
    assert Image.open(io.BytesIO(big)).size == (192, 192)
    v = cat.view("View_DX_V_C_TH_VD_00")
    assert cat.icon_by_name(v["view_big_icon_name"]) == cat.view_icon(v["view_id"], True)
    assert cat.icon_by_name(v["view_icon_name"]) == cat.view_icon(v["view_id"])
    for bad in ("../../etc/passwd", "/Image/Position/Human/View_DX_V_C_TH_VD_00.png",
                "/Image/Position/Cat/nothing.png", "View_DX_V_C_TH_VD_00"):
        assert code_of(cat.icon_by_name, bad) is codes.CATALOG_NOT_FOUND


# ---------------------------------------------------------------------------------------
# Overrides: enable, sort, custom entries, persistence
# ---------------------------------------------------------------------------------------


def _custom_exposures() -> list[dict[str, Any]]:
    return [{"work_station_id": ws, "patient_size": size, "config_object": {"Common": {
        "kV": 60 + i, "mA": 100, "ms": 32, "mAs": 3.2, "Focus": 0, "ExposureMode": 0,
        "AECField": "010"}}}
        for ws in (1, 3) for i, size in enumerate(m.PATIENT_SIZES)]


def test_overrides_persist_across_instances(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    out = cat.set_enabled("body_part", "Human_NECK", False)
    assert out["is_enabled"] is False and out["body_part_id"] == "Human_NECK"
    cat.set_sort("patient_type", ["Cat", "Dog"])
    view = cat.add_custom("view", {
        "view_id": "View_DX_T_A_KN_LAT_10", "view_name": "Knee stress LAT",
        "view_name_local": "膝关节应力侧位", "view_position": "LAT",
        "body_part_id": "Human_LOWER LIMB", "img_proc_id": "extremity",
        "laterality": "L", "exposures": _custom_exposures(),
        "config_object": {"DX": {"TargetEXI": 420, "ImageRotate": "90"}}})
    assert view["is_pre_install"] is False and view["product"] == "DROS"
    assert view["work_station_id"] == 1
    shared = cat.add_custom("view", {
        "view_id": "View_DX_T_A_CH_PA_10", "view_name": "Chest PA inspiration",
        "view_position": "PA", "body_part_id": "Human_CHEST", "apr_id": "View_DX_T_A_CH_PA_00"})
    proc = cat.add_custom("procedure", {
        "procedure_id": "PC-0001", "procedure_name": "Knee stress series",
        "body_part_id": "Human_LOWER LIMB", "protocol_laterality": "L",
        "views": ["View_DX_T_A_KN_AP_00", "View_DX_T_A_KN_LAT_10"]})
    assert proc["patient_type"] == "Human" and proc["is_pre_install"] is False
    assert_shape(proc, SEED_PROCEDURE_LIST["procedures"][0])
    assert_shape(cat.view("View_DX_T_A_KN_LAT_10"), SEED_VIEW)
    assert_shape(cat.apr("View_DX_T_A_KN_LAT_10"), SEED_APR)

    again = CatalogService(tmp_path)
    assert again.body_parts(product="DROS", enabled_only=True) == [
        b for b in cat.body_parts(product="DROS") if b["body_part_id"] != "Human_NECK"]
    assert all(p["body_part_id"] != "Human_NECK"
               for p in again.procedures(enabled_only=True))
    assert [t["patient_type_id"] for t in again.patient_types("VETDROS")] == ["Cat", "Dog"]
    assert [v["view_id"] for v in again.views(procedure_id="PC-0001")] == [
        "View_DX_T_A_KN_AP_00", "View_DX_T_A_KN_LAT_10"]
    assert again.view("View_DX_T_A_KN_LAT_10", language="zh")["view_name"] == "膝关节应力侧位"
    assert again.view_processing("View_DX_T_A_KN_LAT_10")["TargetEXI"] == 420
    assert again.view_processing("View_DX_T_A_KN_LAT_10")["ImageRotate"] == 90
    assert again.apr("View_DX_T_A_KN_LAT_10", "Large", 3)["exposures"][0][
        "config_object"]["Common"]["kV"] == 60
    assert again.tech_params(shared["view_id"], "Medium", 2) == again.tech_params(
        "View_DX_T_A_CH_PA_00", "Medium", 2)
    assert again.view_icon("View_DX_T_A_KN_LAT_10").startswith(b"\x89PNG")

    # custom entries change; a view in use cannot go; then it can
    again.update_custom("procedure", "PC-0001", {"procedure_name": "Knee stress"})
    assert again.procedure("PC-0001")["procedure_name"] == "Knee stress"
    assert code_of(again.delete_custom, "view", "View_DX_T_A_KN_LAT_10") is codes.INVALID_FIELD
    again.delete_custom("procedure", "PC-0001")
    again.delete_custom("view", "View_DX_T_A_KN_LAT_10")
    third = CatalogService(tmp_path)
    assert code_of(third.view, "View_DX_T_A_KN_LAT_10") is codes.CATALOG_NOT_FOUND
    assert code_of(third.procedure, "PC-0001") is codes.CATALOG_NOT_FOUND
    assert third.view(shared["view_id"])["apr_id"] == "View_DX_T_A_CH_PA_00"


def test_custom_hierarchy_and_vet(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    cat.add_custom("patient_type", {"patient_type_id": "Rabbit", "patient_type_name": "Rabbit",
                                    "patient_type_local": "兔", "product": "VETDROS"})
    cat.add_custom("body_part", {"body_part_id": "Rabbit_WHOLE BODY",
                                 "body_part_name": "Whole body", "patient_type": "Rabbit",
                                 "names": {"en": "Whole body", "zh": "全身"}})
    cat.add_custom("view", {"view_id": "View_DX_V_R_WB_LAT_00", "view_name": "Whole body LAT",
                            "view_position": "LAT", "body_part_id": "Rabbit_WHOLE BODY",
                            "apr_id": "View_DX_V_C_TH_LAT_01"})
    assert [t["patient_type_id"] for t in cat.patient_types("VETDROS")][-1] == "Rabbit"
    assert cat.body_parts("Rabbit", "VETDROS", "zh")[0]["body_part_name"] == "全身"
    assert cat.views(body_part="Rabbit_WHOLE BODY", product="VETDROS")[0]["patient_type"] == \
        "Rabbit"
    assert code_of(cat.delete_custom, "patient_type", "Rabbit") is codes.INVALID_FIELD
    cat.set_enabled("patient_type", "Rabbit", False)
    assert cat.views(body_part="Rabbit_WHOLE BODY", product="VETDROS", enabled_only=True) == []
    # a view of the other product's APR, a procedure mixing species: refused
    assert code_of(cat.add_custom, "view", {
        "view_id": "View_X", "view_name": "x", "view_position": "LAT",
        "body_part_id": "Rabbit_WHOLE BODY", "apr_id": "View_DX_T_A_CH_PA_00"}) is \
        codes.INVALID_FIELD
    assert code_of(cat.add_custom, "procedure", {
        "procedure_id": "PX-1", "procedure_name": "x", "body_part_id": "Dog_THORAX",
        "views": ["View_DX_V_D_TH_VD_00", "View_DX_V_C_TH_VD_00"]}) is codes.INVALID_FIELD


def test_custom_ids_and_updates(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    v = cat.add_custom("view", _view(names={"en": "Chest PA sitting", "zh": "胸部坐位后前位"}))
    p1 = cat.add_custom("procedure", {"procedure_name": "Sitting chest", "body_part_id":
                                      "Human_CHEST", "views": [v["view_id"]]})
    p2 = cat.add_custom("procedure", {"procedure_name": "Sitting chest 2", "body_part_id":
                                      "Human_CHEST", "views": [v["view_id"]]})
    assert (p1["procedure_id"], p2["procedure_id"]) == ("PC-0001", "PC-0002")
    assert p1["procedure_code"] == "PC-0001"
    shipped_ids = {p["id"] for p in cat.procedures(product="DROS")
                   + cat.procedures(product="VETDROS") if p["is_pre_install"]}
    assert p1["id"] != p2["id"] and not {p1["id"], p2["id"]} & shipped_ids
    assert p1["id"].isdigit()
    assert cat.view(v["view_id"], language="zh")["view_name"] == "胸部坐位后前位"
    # a change of the exposures and of the name keeps the id
    new = _custom_exposures()
    new[0]["config_object"]["Common"].update(kV=90, mA=200, ms=16, mAs=3.2)
    out = cat.update_custom("view", v["view_id"], {"exposures": new, "view_name": "Chest sit"})
    assert out["internal_id"] == v["view_id"] and out["view_name"] == "Chest sit"
    assert cat.update_custom("procedure", "PC-0002", {"fast_search": True})["id"] == p2["id"]
    again = CatalogService(tmp_path)
    assert again.view(v["view_id"], language="zh")["view_name"] == "Chest sit"
    e = again.apr(v["view_id"], new[0]["patient_size"], new[0]["work_station_id"])
    assert e["exposures"][0]["config_object"]["Common"]["kV"] == 90
    assert again.procedure("PC-0002")["id"] == p2["id"]
    assert code_of(again.update_custom, "view", v["view_id"],
                   {"view_id": "View_other"}) is codes.INVALID_FIELD
    assert code_of(again.update_custom, "view", v["view_id"],
                   {"exposures": _exp(kV=20)}) is codes.INVALID_FIELD
    assert again.apr(v["view_id"], "Large", 1)["exposures"][0]["config_object"]["Common"][
        "kV"] == 90


def test_view_without_technique(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    cat.add_custom("view", _view(exposures=None, is_enabled=False, sort=0))
    vid = "View_DX_T_A_XX_AP_00"
    assert cat.views()[0]["view_id"] == vid and cat.views()[0]["is_enabled"] is False
    assert code_of(cat.apr, vid) is codes.NO_TECHNIQUE
    assert code_of(cat.tech_params, vid, "Medium", 1) is codes.NO_TECHNIQUE
    cat.update_custom("view", vid, {"exposures": _custom_exposures()})
    assert len(cat.apr(vid)["exposures"]) == 8
    cat.update_custom("view", vid, {"apr_id": "View_DX_T_A_CH_PA_00", "exposures": None})
    assert cat.apr(vid)["apr_id"] == "View_DX_T_A_CH_PA_00"
    cat.update_custom("view", vid, {"view_name": "y"})
    assert CatalogService(tmp_path).view(vid)["view_name"] == "y"


def test_preinstalled_entries_are_read_only(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    assert code_of(cat.update_custom, "view", "View_DX_T_A_SK_AP_00",
                   {"view_name": "x"}) is codes.CATALOG_READONLY
    assert code_of(cat.delete_custom, "procedure", "P0-0002") is codes.CATALOG_READONLY
    assert code_of(cat.update_custom, "procedure", "P0-0002",
                   {"is_enabled": False, "views": []}) is codes.CATALOG_READONLY
    assert cat.procedure("P0-0002")["is_enabled"] is True  # nothing of the above applied
    out = cat.update_custom("procedure", "P0-0002", {"is_enabled": False, "sort": 99})
    assert (out["is_enabled"], out["sort"]) == (False, 99)
    assert CatalogService(tmp_path).procedure("P0-0002")["sort"] == 99


def _view(**kw: Any) -> dict[str, Any]:
    base = {"view_id": "View_DX_T_A_XX_AP_00", "view_name": "x", "view_position": "AP",
            "body_part_id": "Human_CHEST", "exposures": _custom_exposures()}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def _exp(**common: Any) -> list[dict[str, Any]]:
    e = _custom_exposures()
    e[0]["config_object"]["Common"].update(common)
    return e


BAD_CALLS = [
    ("set_enabled", ("shelf", "Human_NECK", False), codes.INVALID_FIELD),
    ("set_enabled", ("body_part", "Human_NOSE", False), codes.CATALOG_NOT_FOUND),
    ("set_enabled", ("body_part", "Human_NECK", "no"), codes.INVALID_FIELD),
    ("set_sort", ("view", []), codes.INVALID_FIELD),
    ("set_sort", ("view", "View_DX_T_A_SK_AP_00"), codes.INVALID_FIELD),
    ("set_sort", ("view", ["View_DX_T_A_SK_AP_00", "View_DX_T_A_SK_AP_00"]),
     codes.INVALID_FIELD),
    ("set_sort", ("view", ["View_DX_T_A_SK_AP_00", "nope"]), codes.CATALOG_NOT_FOUND),
    ("add_custom", ("view", "not a dict"), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(view_id=None)), codes.MISSING_FIELD),
    ("add_custom", ("view", _view(view_name="")), codes.MISSING_FIELD),
    ("add_custom", ("view", _view(view_id="View_DX_T_A_SK_AP_00")), codes.DUPLICATE),
    ("add_custom", ("view", _view(view_id="../../x")), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(body_part_id="Human_TAIL")), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(img_proc_id="sharpest")), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(colour="red")), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(config_object={"DX": {"ImageRotate": "45"}})),
     codes.INVALID_FIELD),
    ("add_custom", ("view", _view(config_object={"DX": {"TargetEXI": "250"}})),
     codes.INVALID_FIELD),
    ("add_custom", ("view", _view(exposures=_exp(kV=160))), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(exposures=_exp(kV=True))), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(exposures=_exp(mAs=5))), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(exposures=_exp(mA=500, mAs=16))), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(exposures=_exp(AECField="2"))), codes.INVALID_FIELD),
    ("add_custom", ("view", _view(exposures=[{"work_station_id": 9, "patient_size": "Large",
                                              "config_object": {"Common": {}}}])),
     codes.INVALID_FIELD),
    ("add_custom", ("view", _view(exposures=_custom_exposures()[:1] * 2)), codes.INVALID_FIELD),
    ("add_custom", ("procedure", {"procedure_id": "PC-1", "procedure_name": "x",
                                  "body_part_id": "Human_CHEST", "views": []}),
     codes.INVALID_FIELD),
    ("add_custom", ("procedure", {"procedure_id": "PC-1", "procedure_name": "x",
                                  "body_part_id": "Human_CHEST"}), codes.MISSING_FIELD),
    ("add_custom", ("procedure", {"procedure_id": "PC-1", "procedure_name": "x",
                                  "body_part_id": "Human_CHEST", "views": ["nope"]}),
     codes.INVALID_FIELD),
    ("add_custom", ("procedure", {"procedure_id": "PC-1", "procedure_name": "x",
                                  "body_part_id": "Human_CHEST",
                                  "views": ["View_DX_T_A_CH_PA_00"], "fast_search": "yes"}),
     codes.INVALID_FIELD),
    ("add_custom", ("body_part", {"body_part_id": "Human_X", "body_part_name": "x",
                                  "patient_type": "Martian"}), codes.INVALID_FIELD),
    ("add_custom", ("patient_type", {"patient_type_id": "Human", "patient_type_name": "x"}),
     codes.DUPLICATE),
    ("add_custom", ("patient_type", {"patient_type_id": "Fish", "patient_type_name": "x",
                                     "product": "AQUADROS"}), codes.INVALID_FIELD),
    ("update_custom", ("view", "nope", {"view_name": "y"}), codes.CATALOG_NOT_FOUND),
    ("update_custom", ("view", "View_DX_T_A_SK_AP_00", {}), codes.INVALID_FIELD),
    ("update_custom", ("view", "View_DX_T_A_SK_AP_00", {"sort": "1"}), codes.INVALID_FIELD),
    ("delete_custom", ("view", "nope"), codes.CATALOG_NOT_FOUND),
]


def test_bad_inputs_leave_state_unchanged(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    cat.set_enabled("view", "View_DX_T_A_SK_AP_00", False)
    path = tmp_path / OVERRIDES_FILE
    before_file = path.read_bytes()
    before = [cat.views(), cat.procedures(), cat.body_parts(), cat.patient_types("VETDROS")]
    for name, args, code in BAD_CALLS:
        assert code_of(getattr(cat, name), *args) is code, (name, args)
        assert path.read_bytes() == before_file, name
        assert [cat.views(), cat.procedures(), cat.body_parts(),
                cat.patient_types("VETDROS")] == before, name


@pytest.mark.parametrize("call, code", [
    (lambda c: c.views(product="ACME"), codes.INVALID_FIELD),
    (lambda c: c.views(language="fr"), codes.INVALID_FIELD),
    (lambda c: c.views(procedure_id="P9-9999"), codes.CATALOG_NOT_FOUND),
    (lambda c: c.view(None), codes.INVALID_FIELD),
    (lambda c: c.apr("View_DX_T_A_SK_AP_00", "Huge"), codes.INVALID_FIELD),
    (lambda c: c.apr("View_DX_T_A_SK_AP_00", "Large", "1"), codes.INVALID_FIELD),
    (lambda c: c.apr("View_DX_T_A_SK_AP_00", "Large", 7), codes.INVALID_FIELD),
    (lambda c: c.tech_params("View_DX_T_A_HD_PA_00", "Tiny", 2), codes.INVALID_FIELD),
    (lambda c: c.apr_device("View_DX_T_A_HD_PA_00", None), codes.INVALID_FIELD),
    (lambda c: c.apr("nope"), codes.CATALOG_NOT_FOUND),
])
def test_bad_reads(cat: CatalogService, call, code) -> None:
    assert code_of(call, cat) is code


def test_write_failure_keeps_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = CatalogService(tmp_path)

    def broken(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    original = service_mod._atomic_write
    monkeypatch.setattr(service_mod, "_atomic_write", broken)
    assert code_of(cat.set_enabled, "view", "View_DX_T_A_SK_AP_00", False) is \
        codes.STORAGE_ERROR
    assert code_of(cat.add_custom, "view", _view()) is codes.STORAGE_ERROR
    assert cat.view("View_DX_T_A_SK_AP_00")["is_enabled"] is True
    assert not (tmp_path / OVERRIDES_FILE).exists()
    # the failed changes do not ride along with the next one
    monkeypatch.setattr(service_mod, "_atomic_write", original)
    cat.set_enabled("view", "View_DX_T_A_SK_LAT_00", False)
    fresh = CatalogService(tmp_path)
    assert fresh.view("View_DX_T_A_SK_AP_00")["is_enabled"] is True
    assert fresh.view("View_DX_T_A_SK_LAT_00")["is_enabled"] is False
    assert code_of(fresh.view, "View_DX_T_A_XX_AP_00") is codes.CATALOG_NOT_FOUND


def test_stale_custom_entry_is_dropped(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    cat.add_custom("view", _view())
    saved = json.loads((tmp_path / OVERRIDES_FILE).read_text())
    saved["custom"]["view"][0]["body_part_id"] = "Human_GONE"  # as after a catalog upgrade
    saved["custom"]["procedure"] = [{"procedure_id": "PC-0009"}]  # hand-edited, incomplete
    (tmp_path / OVERRIDES_FILE).write_text(json.dumps(saved))
    again = CatalogService(tmp_path)
    assert code_of(again.view, "View_DX_T_A_XX_AP_00") is codes.CATALOG_NOT_FOUND
    again.set_enabled("view", "View_DX_T_A_SK_AP_00", False)  # later changes still work
    assert json.loads((tmp_path / OVERRIDES_FILE).read_text())["custom"]["view"] == []
    assert code_of(again.procedure, "PC-0009") is codes.CATALOG_NOT_FOUND


@pytest.mark.parametrize("text", ["{not json", "[]", '{"enabled": {"view": []}}',
                                  '{"sort": {"view": {"View_DX_T_A_SK_AP_00": "1"}}}',
                                  '{"custom": {"view": ["x"]}}'])
def test_corrupt_overrides_file_is_reported(tmp_path: Path, text: str) -> None:
    (tmp_path / OVERRIDES_FILE).write_text(text)
    assert code_of(CatalogService, tmp_path) is codes.STORAGE_ERROR


def test_in_memory_service_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cat = CatalogService()
    cat.set_enabled("view", "View_DX_T_A_SK_AP_00", False)
    assert not cat.view("View_DX_T_A_SK_AP_00")["is_enabled"]
    assert list(tmp_path.iterdir()) == []
    assert CatalogService().view("View_DX_T_A_SK_AP_00")["is_enabled"] is True


def test_concurrent_changes_all_land(tmp_path: Path) -> None:
    cat = CatalogService(tmp_path)
    ids = [v["view_id"] for v in cat.views()[:16]]
    errors: list[BaseException] = []

    def worker(chunk: list[str]) -> None:
        try:
            for vid in chunk:
                cat.set_enabled("view", vid, False)
                cat.view(vid)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    saved = json.loads((tmp_path / OVERRIDES_FILE).read_text())
    assert saved["enabled"]["view"] == {vid: False for vid in ids}
    assert all(not v["is_enabled"] for v in CatalogService(tmp_path).views()[:16])
