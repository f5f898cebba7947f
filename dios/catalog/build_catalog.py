"""Build the shipped protocol catalog (``dios/catalog/data/*.json``) from its charts.

The technique charts, names (English and Chinese), projections and display settings live
here as readable tables; the JSON files are generated from them and shipped. Edit a table,
then run::

    python -m dios.catalog.build_catalog            # rewrite data/dros.json, vetdros.json
    python -m dios.catalog.build_catalog --check    # exit 1 when the shipped files differ

Chart basis
-----------
Each view carries one chart technique (kV, mAs) for a *Medium* patient, with its basis:
``G100`` grid (10:1 reciprocating Bucky) at 100 cm SID, ``G180`` grid at 180 cm (chest,
lateral cervical spine), ``N100`` table-top without grid at 100 cm (distal extremities,
cats, small children). These are typical digital radiography values, roughly 30-50 %
below the classic 400-speed screen-film charts.

Patient sizes
    Derived from Medium with per-region steps (``SIZE_STEPS``): a kV step and an mAs
    factor, about one thickness class (4-5 cm trunk, 2 cm extremity) apart.
Work stations
    Every view has techniques for every work station (a room may have any of them); the
    view's ``work_station_id`` is the one it is usually taken on. Techniques follow
    ``mAs x (SID / SID_basis)^2`` for the station's SID; a Bucky factor of 4 between
    grid and no grid; trunk work moved from grid to no grid also drops kV by 12 % and
    raises mAs by the 15 % rule (detector signal ~ kV^5).
Tables
    mA, ms and mAs are placed on the R10 series (:func:`dios.catalog.model.split_mas`),
    with the view's preferred mA under the focus ceiling and the chart power.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dios.catalog.model import PATIENT_SIZES, clean_number, split_mas

DATA_DIR = Path(__file__).with_name("data")

# ---------------------------------------------------------------------------------------
# Stations, size steps, collimator formats
# ---------------------------------------------------------------------------------------

#: station -> (grid, default SID cm, GridType, PositionNumber); SID per product below
STATIONS = {
    1: {"grid": True, "GridType": 2, "PositionNumber": "2"},
    2: {"grid": True, "GridType": 2, "PositionNumber": "1"},
    3: {"grid": False, "GridType": 0, "PositionNumber": "3"},
}
STATION_NAMES = {
    1: ("Table Bucky", "摄影床"),
    2: ("Wall stand Bucky", "胸片架"),
    3: ("Free detector", "自由探测器"),
}
SID = {"DROS": {1: 115, 2: 115, 3: 100}, "VETDROS": {1: 100, 2: 115, 3: 100}}
BUCKY_FACTOR = 4.0
NO_GRID_KV = 0.88
KV_EXPONENT = 5.0

#: technique class -> size -> (kV step, mAs factor); Medium is the chart
SIZE_STEPS: dict[str, dict[str, tuple[float, float]]] = {
    "trunk": {"Large": (6, 1.6), "Small": (-5, 0.63), "Paediatric": (-12, 0.25)},
    "chest": {"Large": (5, 1.6), "Small": (-5, 0.8), "Paediatric": (-20, 0.4)},
    "extremity": {"Large": (5, 1.6), "Small": (-3, 0.8), "Paediatric": (-5, 0.5)},
    "child": {"Large": (8, 1.6), "Small": (-8, 0.5), "Paediatric": (-12, 0.32)},
    "dog": {"Large": (8, 1.6), "Small": (-8, 0.5), "Paediatric": (-10, 0.4)},
    "dog_limb": {"Large": (6, 1.4), "Small": (-6, 0.6), "Paediatric": (-8, 0.5)},
    "cat": {"Large": (3, 1.25), "Small": (-3, 0.8), "Paediatric": (-6, 0.5)},
}
#: thickness factor per size, applied to the family's Medium thickness
THICKNESS_FACTOR = {"Large": 1.25, "Medium": 1.0, "Small": 0.85, "Paediatric": 0.6}

COLL = {  # name -> (width in, width cm, length in, length cm)
    "8x10": (8, 20, 10, 25), "10x12": (10, 24, 12, 30), "11x14": (11, 28, 14, 35),
    "14x14": (14, 35, 14, 35), "14x17": (14, 35, 17, 43), "17x14": (17, 43, 14, 35),
    "17x17": (17, 43, 17, 43), "7x17": (7, 18, 17, 43),
}


@dataclass
class Family:
    """Defaults shared by the views of one region."""

    body_part: str
    code: str
    region: str
    img: str
    target: int
    basis: str
    #: work stations in order of preference; the first is the view's default
    stations: list[int]
    focus: int
    ma: float
    tech: str
    thick: int
    apr_cat: str
    coll: str = "10x12"
    aec: str = "010"
    limb: str = ""  # "upper" / "lower" for patient orientation of extremities


@dataclass
class ViewSpec:
    """One view row of a chart."""

    vid: str
    en: str
    zh: str
    pos: str
    lat: str
    fam: Family
    kv: float
    mas: float
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Human catalog (DROS)
# ---------------------------------------------------------------------------------------

H = "Human"
HF = {
    "SK": Family("Human_SKULL", "SK", "SKULL", "skull", 300, "G100", [1, 2, 3], 0, 200, "trunk",
                 19, "SKULL", "10x12"),
    "NK": Family("Human_NECK", "NK", "NECK", "default", 300, "G100", [1, 2, 3], 0, 200, "trunk",
                 12, "NECK", "10x12"),
    "CS": Family("Human_CERVICAL SPINE", "CS", "CERVICAL SPINE", "spine", 300, "G100",
                 [1, 2, 3], 0, 200, "trunk", 13, "SPINE", "10x12"),
    "TS": Family("Human_THORACIC SPINE", "TS", "THORACIC SPINE", "spine", 300, "G100",
                 [1, 2, 3], 1, 400, "trunk", 23, "SPINE", "7x17"),
    "LS": Family("Human_LUMBAR SPINE", "LS", "LUMBAR SPINE", "spine", 300, "G100", [1, 2, 3],
                 1, 400, "trunk", 23, "SPINE", "7x17"),
    "SC": Family("Human_LUMBAR SPINE", "SC", "SACRUM", "spine", 300, "G100", [1, 3], 1, 400,
                 "trunk", 22, "SPINE", "10x12"),
    "CH": Family("Human_CHEST", "CH", "CHEST", "chest", 250, "G180", [2, 3], 1, 500, "chest",
                 23, "CHEST", "17x17", "101"),
    "RB": Family("Human_RIBS", "RB", "RIBS", "default", 300, "G100", [1, 2, 3], 1, 320,
                 "trunk", 23, "CHEST", "14x17"),
    "AB": Family("Human_ABDOMEN", "AB", "ABDOMEN", "abdomen", 300, "G100", [1, 2, 3], 1, 400,
                 "trunk", 22, "ABDOMEN", "14x17", "111"),
    "PV": Family("Human_PELVIS", "PV", "PELVIS", "abdomen", 300, "G100", [1, 2, 3], 1, 400,
                 "trunk", 22, "PELVIS", "17x14", "111"),
    "HP": Family("Human_HIP", "HP", "HIP", "default", 300, "G100", [1, 3], 1, 320, "trunk", 20,
                 "PELVIS", "10x12"),
    "SH": Family("Human_SHOULDER", "SH", "SHOULDER", "extremity", 400, "G100", [1, 2, 3], 1,
                 320, "extremity", 15, "EXTREMITIES_LARGE", "10x12"),
    "CL": Family("Human_SHOULDER", "CL", "CLAVICLE", "extremity", 400, "G100", [1, 2, 3], 0,
                 200, "extremity", 13, "EXTREMITIES_LARGE", "10x12"),
    "HM": Family("Human_UPPER LIMB", "HM", "HUMERUS", "extremity", 400, "N100", [3, 1], 0, 200,
                 "extremity", 9, "EXTREMITIES_LARGE", "11x14", limb="upper"),
    "EL": Family("Human_UPPER LIMB", "EL", "ELBOW", "extremity", 400, "N100", [3, 1], 0, 100,
                 "extremity", 7, "EXTREMITIES_MEDIUM", "8x10", limb="upper"),
    "FA": Family("Human_UPPER LIMB", "FA", "FOREARM", "extremity", 400, "N100", [3, 1], 0, 100,
                 "extremity", 6, "EXTREMITIES_MEDIUM", "10x12", limb="upper"),
    "WR": Family("Human_UPPER LIMB", "WR", "WRIST", "extremity", 500, "N100", [3, 1], 0, 100,
                 "extremity", 5, "EXTREMITIES_MEDIUM", "8x10", limb="upper"),
    "HD": Family("Human_UPPER LIMB", "HD", "HAND", "extremity", 500, "N100", [3, 1], 0, 80,
                 "extremity", 4, "EXTREMITIES_MEDIUM", "8x10", limb="upper"),
    "FM": Family("Human_LOWER LIMB", "FM", "FEMUR", "extremity", 400, "G100", [1, 3], 1, 250,
                 "extremity", 15, "EXTREMITIES_LARGE", "7x17", limb="lower"),
    "KN": Family("Human_LOWER LIMB", "KN", "KNEE", "extremity", 400, "G100", [1, 3], 0, 200,
                 "extremity", 12, "EXTREMITIES_LARGE", "8x10", limb="lower"),
    "LG": Family("Human_LOWER LIMB", "LG", "LEG", "extremity", 400, "N100", [3, 1], 0, 160,
                 "extremity", 10, "EXTREMITIES_LARGE", "7x17", limb="lower"),
    "AK": Family("Human_LOWER LIMB", "AK", "ANKLE", "extremity", 400, "N100", [3, 1], 0, 100,
                 "extremity", 8, "EXTREMITIES_MEDIUM", "8x10", limb="lower"),
    "FT": Family("Human_LOWER LIMB", "FT", "FOOT", "extremity", 500, "N100", [3, 1], 0, 100,
                 "extremity", 6, "EXTREMITIES_MEDIUM", "10x12", limb="lower"),
    "CA": Family("Human_LOWER LIMB", "CA", "CALCANEUS", "extremity", 400, "N100", [3, 1], 0,
                 100, "extremity", 7, "EXTREMITIES_MEDIUM", "8x10", limb="lower"),
    "PCH": Family("Human_CHEST", "CH", "CHEST", "pediatric", 200, "N100", [3, 1], 1, 400,
                  "child", 13, "PEDIATRIC", "14x14", "101"),
    "PAB": Family("Human_ABDOMEN", "AB", "ABDOMEN", "pediatric", 200, "N100", [3, 1], 1, 400,
                  "child", 12, "PEDIATRIC", "11x14", "111"),
    "PPV": Family("Human_PELVIS", "PV", "PELVIS", "pediatric", 200, "N100", [3, 1], 1, 400,
                  "child", 11, "PEDIATRIC", "10x12", "111"),
}

HUMAN_BODY_PARTS = [  # id suffix, en, zh
    ("SKULL", "Skull", "颅骨"),
    ("NECK", "Neck", "颈部"),
    ("CERVICAL SPINE", "Cervical spine", "颈椎"),
    ("THORACIC SPINE", "Thoracic spine", "胸椎"),
    ("LUMBAR SPINE", "Lumbosacral spine", "腰骶椎"),
    ("CHEST", "Chest", "胸部"),
    ("RIBS", "Ribs", "肋骨"),
    ("ABDOMEN", "Abdomen", "腹部"),
    ("PELVIS", "Pelvis", "骨盆"),
    ("HIP", "Hip", "髋关节"),
    ("SHOULDER", "Shoulder girdle", "肩部"),
    ("UPPER LIMB", "Upper limb", "上肢"),
    ("LOWER LIMB", "Lower limb", "下肢"),
]

SIDES = (("L", "left", "左"), ("R", "right", "右"))


def _v(fam: str, suffix: str, en: str, zh: str, pos: str, kv: float, mas: float,
       lat: str = "U", prefix: str = "View_DX_T_A", **extra: Any) -> ViewSpec:
    f = HF[fam]
    return ViewSpec(f"{prefix}_{f.code}_{suffix}", en, zh, pos, lat, f, kv, mas, extra)


def _pair(fam: str, pos: str, n: int, en: str, zh: str, kv: float, mas: float,
          **extra: Any) -> list[ViewSpec]:
    """Left (even index) and right (odd index) views of a paired part."""
    out = []
    for k, (lat, side_en, side_zh) in enumerate(SIDES):
        out.append(_v(fam, f"{pos}_{2 * n + k:02d}", f"{en},{side_en}", f"{side_zh}{zh}",
                      pos, kv, mas, lat=lat, **extra))
    return out


def human_views() -> list[ViewSpec]:
    v: list[ViewSpec] = [
        _v("SK", "AP_00", "Skull AP", "颅骨前后位", "AP", 75, 16, coll="14x17"),
        _v("SK", "PA_00", "Skull PA", "颅骨后前位", "PA", 75, 16),
        _v("SK", "LAT_00", "Skull LAT,left", "颅骨左侧位", "LAT", 70, 10, coll="8x10"),
        _v("SK", "LAT_01", "Skull LAT,right", "颅骨右侧位", "LAT", 70, 10, coll="8x10"),
        _v("SK", "Axial_00", "Skull AP Axial", "颅骨前后轴位", "AP", 80, 20, coll="14x17",
           angle=-30),
        _v("SK", "Special_04", "Skull Townes View", "颅骨汤氏位", "AP", 80, 20, angle=-30),
        _v("SK", "Special_05", "Skull Stenvers View", "颅骨斯氏位", "OBL", 75, 16, angle=12,
           coll="8x10"),
        _v("SK", "Axial_04", "Mandible,jaw close", "下颌骨, 闭口", "Axial", 70, 10,
           coll="14x17", region="Facial bones", ws=1),
        _v("SK", "PA_01", "Paranasal sinuses Waters", "鼻窦瓦氏位", "PA", 75, 16,
           region="Facial bones", coll="8x10"),
        _v("SK", "PA_02", "Paranasal sinuses Caldwell", "鼻窦柯氏位", "PA", 75, 16, angle=-15,
           region="Facial bones", coll="8x10"),
        _v("NK", "AP_00", "Neck soft tissue AP", "颈部软组织正位", "AP", 65, 6.3),
        _v("NK", "LAT_00", "Neck soft tissue LAT", "颈部软组织侧位", "LAT", 65, 5),
        _v("CS", "AP_00", "Cervical spine AP", "颈椎正位", "AP", 70, 10, angle=15),
        _v("CS", "LAT_00", "Cervical spine LAT", "颈椎侧位", "LAT", 75, 12.5, basis="G180",
           stations=[2, 1, 3]),
        _v("CS", "OBL_00", "Cervical spine OBL,left", "颈椎左斜位", "OBL", 72, 12.5, angle=15,
           basis="G180", stations=[2, 1, 3]),
        _v("CS", "OBL_01", "Cervical spine OBL,right", "颈椎右斜位", "OBL", 72, 12.5,
           angle=15, basis="G180", stations=[2, 1, 3]),
        _v("CS", "AP_01", "Odontoid open mouth", "寰枢椎张口位", "AP", 75, 12.5, coll="8x10"),
        _v("CS", "LAT_01", "Cervical spine LAT flexion", "颈椎过屈侧位", "LAT", 75, 12.5,
           basis="G180", stations=[2, 1, 3]),
        _v("CS", "LAT_02", "Cervical spine LAT extension", "颈椎过伸侧位", "LAT", 75, 12.5,
           basis="G180", stations=[2, 1, 3]),
        _v("TS", "AP_00", "Thoracic spine AP", "胸椎正位", "AP", 75, 20),
        _v("TS", "LAT_00", "Thoracic spine LAT", "胸椎侧位", "LAT", 80, 32, thick=30),
        _v("LS", "AP_00", "Lumbar spine AP", "腰椎正位", "AP", 80, 25),
        _v("LS", "LAT_00", "Lumbar spine LAT", "腰椎侧位", "LAT", 90, 40, thick=30),
        _v("LS", "OBL_00", "Lumbar spine OBL,left", "腰椎左斜位", "OBL", 85, 32),
        _v("LS", "OBL_01", "Lumbar spine OBL,right", "腰椎右斜位", "OBL", 85, 32),
        _v("LS", "LAT_01", "Lumbar spine LAT flexion", "腰椎过屈侧位", "LAT", 90, 40, thick=30),
        _v("LS", "LAT_02", "Lumbar spine LAT extension", "腰椎过伸侧位", "LAT", 90, 40,
           thick=30),
        _v("SC", "AP_00", "Sacrum AP", "骶骨正位", "AP", 80, 25, angle=15),
        _v("SC", "LAT_00", "Sacrum and coccyx LAT", "骶尾骨侧位", "LAT", 90, 50, thick=30),
        _v("CH", "PA_00", "Chest PA", "胸部后前位", "PA", 120, 2.5),
        _v("CH", "LAT_00", "Chest LAT,left", "胸部左侧位", "LAT", 125, 6.3, coll="14x17",
           aec="010", thick=32),
        _v("CH", "AP_00", "Chest AP,supine/bedside", "胸部前后位(仰卧/床旁)", "AP", 90, 4,
           basis="G100", stations=[3, 1, 2], coll="14x17"),
        *_pair("RB", "AP", 0, "Ribs AP", "侧肋骨前后位", 75, 16),
        *_pair("RB", "OBL", 0, "Ribs OBL", "侧肋骨斜位", 75, 20),
        _v("AB", "AP_00", "Abdomen AP supine", "腹部仰卧前后位", "AP", 80, 25),
        _v("AB", "AP_01", "Abdomen AP erect", "腹部立位前后位", "AP", 80, 32, stations=[2, 3]),
        _v("AB", "AP_02", "Abdomen AP,left lateral decubitus", "腹部左侧卧水平正位", "AP", 85,
           32, stations=[2, 3], rotate="90"),
        _v("PV", "AP_00", "Pelvis AP", "骨盆前后位", "AP", 80, 25),
        _v("PV", "Axial_00", "Pelvis inlet", "骨盆入口位", "AP", 85, 32, angle=-40),
        _v("PV", "Axial_01", "Pelvis outlet", "骨盆出口位", "AP", 85, 32, angle=35),
        *_pair("HP", "AP", 0, "Hip AP", "髋关节正位", 80, 20),
        *_pair("HP", "LAT", 0, "Hip frog-leg LAT", "髋关节蛙式位", 80, 20),
        *_pair("SH", "AP", 0, "Shoulder AP", "肩关节正位", 75, 10),
        *_pair("SH", "OBL", 0, "Shoulder scapular Y", "肩胛骨Y位", 80, 16),
        *_pair("CL", "AP", 0, "Clavicle AP", "锁骨正位", 70, 8),
        *_pair("HM", "AP", 0, "Humerus AP", "肱骨正位", 65, 5),
        *_pair("HM", "LAT", 0, "Humerus LAT", "肱骨侧位", 65, 5),
        *_pair("EL", "AP", 0, "Elbow AP", "肘关节正位", 60, 3.2),
        *_pair("EL", "LAT", 0, "Elbow LAT", "肘关节侧位", 60, 3.2),
        *_pair("FA", "AP", 0, "Forearm AP", "前臂正位", 60, 2.5),
        *_pair("FA", "LAT", 0, "Forearm LAT", "前臂侧位", 60, 2.5),
        *_pair("WR", "PA", 0, "Wrist PA", "腕关节后前位", 55, 2.5),
        *_pair("WR", "LAT", 0, "Wrist LAT", "腕关节侧位", 55, 3.2),
        *_pair("WR", "PA", 1, "Scaphoid PA,ulnar deviation", "舟骨尺偏位", 55, 2.5),
        *_pair("HD", "PA", 0, "Hand PA", "手后前位", 50, 2),
        *_pair("HD", "OBL", 0, "Hand OBL", "手斜位", 50, 2),
        *_pair("FM", "AP", 0, "Femur AP", "股骨正位", 75, 10),
        *_pair("FM", "LAT", 0, "Femur LAT", "股骨侧位", 75, 10),
        *_pair("KN", "AP", 0, "Knee AP", "膝关节正位", 65, 6.3, angle=5),
        *_pair("KN", "LAT", 0, "Knee LAT", "膝关节侧位", 65, 5),
        *_pair("KN", "Axial", 0, "Patella skyline", "髌骨轴位", 65, 4, basis="N100",
               stations=[3, 1], rotate="180"),
        *_pair("LG", "AP", 0, "Tibia and fibula AP", "胫腓骨正位", 65, 4),
        *_pair("LG", "LAT", 0, "Tibia and fibula LAT", "胫腓骨侧位", 65, 4),
        *_pair("AK", "AP", 0, "Ankle AP", "踝关节正位", 60, 3.2),
        *_pair("AK", "LAT", 0, "Ankle LAT", "踝关节侧位", 60, 2.5),
        *_pair("AK", "OBL", 0, "Ankle mortise", "踝关节踝穴位", 60, 3.2),
        *_pair("FT", "AP", 0, "Foot AP", "足正位", 55, 2.5, angle=10),
        *_pair("FT", "OBL", 0, "Foot OBL", "足斜位", 55, 2.5),
        *_pair("FT", "LAT", 0, "Foot LAT", "足侧位", 55, 3.2),
        *_pair("CA", "Axial", 0, "Calcaneus axial", "跟骨轴位", 65, 5, angle=40, rotate="180"),
        *_pair("CA", "LAT", 0, "Calcaneus LAT", "跟骨侧位", 60, 3.2),
        _v("PCH", "AP_00", "Paediatric chest AP", "儿童胸部前后位", "AP", 70, 1.25,
           prefix="View_DX_T_P"),
        _v("PAB", "AP_00", "Paediatric abdomen AP", "儿童腹部前后位", "AP", 65, 2,
           prefix="View_DX_T_P"),
        _v("PPV", "AP_00", "Paediatric hips AP", "儿童双髋前后位", "AP", 65, 2, lat="B",
           prefix="View_DX_T_P"),
    ]
    return v


def _hv(code: str) -> str:
    return f"View_DX_T_A_{code}"


def _human_paired_procedures() -> list[tuple]:
    rows = []
    paired = [
        ("Ribs AP + OBL", "侧肋骨前后位 + 斜位", "Human_RIBS", ["RB_AP_0{i}", "RB_OBL_0{i}"]),
        ("Hip AP + frog-leg LAT", "髋关节正位 + 蛙式位", "Human_HIP",
         ["HP_AP_0{i}", "HP_LAT_0{i}"]),
        ("Shoulder AP + Y", "肩关节正位 + Y位", "Human_SHOULDER", ["SH_AP_0{i}", "SH_OBL_0{i}"]),
        ("Clavicle AP", "锁骨正位", "Human_SHOULDER", ["CL_AP_0{i}"]),
        ("Humerus AP + LAT", "肱骨正侧位", "Human_UPPER LIMB", ["HM_AP_0{i}", "HM_LAT_0{i}"]),
        ("Elbow AP + LAT", "肘关节正侧位", "Human_UPPER LIMB", ["EL_AP_0{i}", "EL_LAT_0{i}"]),
        ("Forearm AP + LAT", "前臂正侧位", "Human_UPPER LIMB", ["FA_AP_0{i}", "FA_LAT_0{i}"]),
        ("Wrist PA + LAT", "腕关节正侧位", "Human_UPPER LIMB", ["WR_PA_0{i}", "WR_LAT_0{i}"]),
        ("Scaphoid series", "舟骨系列", "Human_UPPER LIMB", ["WR_PA_0{i}", "WR_PA_0{j}"]),
        ("Hand PA + OBL", "手正斜位", "Human_UPPER LIMB", ["HD_PA_0{i}", "HD_OBL_0{i}"]),
        ("Femur AP + LAT", "股骨正侧位", "Human_LOWER LIMB", ["FM_AP_0{i}", "FM_LAT_0{i}"]),
        ("Knee AP + LAT", "膝关节正侧位", "Human_LOWER LIMB", ["KN_AP_0{i}", "KN_LAT_0{i}"]),
        ("Patella skyline", "髌骨轴位", "Human_LOWER LIMB", ["KN_Axial_0{i}"]),
        ("Tibia and fibula AP + LAT", "胫腓骨正侧位", "Human_LOWER LIMB",
         ["LG_AP_0{i}", "LG_LAT_0{i}"]),
        ("Ankle AP + LAT + mortise", "踝关节正侧位 + 踝穴位", "Human_LOWER LIMB",
         ["AK_AP_0{i}", "AK_LAT_0{i}", "AK_OBL_0{i}"]),
        ("Foot AP + OBL + LAT", "足正斜侧位", "Human_LOWER LIMB",
         ["FT_AP_0{i}", "FT_OBL_0{i}", "FT_LAT_0{i}"]),
        ("Calcaneus axial + LAT", "跟骨轴侧位", "Human_LOWER LIMB",
         ["CA_Axial_0{i}", "CA_LAT_0{i}"]),
    ]
    for en, zh, bp, views in paired:
        for k, (lat, side_en, side_zh) in enumerate(SIDES):
            names = [_hv(x.format(i=k, j=k + 2)) for x in views]
            rows.append((f"{en},{side_en}", f"{side_zh}{zh}", bp, names, lat, "Adult"))
    return rows


def human_procedures() -> list[tuple]:
    """(en, zh, body part, views, laterality, category) in procedure-id order."""
    sk = "Human_SKULL"
    rows: list[tuple] = [
        ("Skull Townes View", "颅骨汤氏位", sk, [_hv("SK_Special_04")], "U", "Adult"),
        ("Skull AP + LAT", "颅骨前后位 + 侧位", sk, [_hv("SK_AP_00"), _hv("SK_LAT_00")], "U",
         "Adult"),
        ("Skull PA + LAT", "颅骨后前位 + 侧位", sk, [_hv("SK_PA_00"), _hv("SK_LAT_00")], "U",
         "Adult"),
        ("Skull AP", "颅骨前后位", sk, [_hv("SK_AP_00")], "U", "Adult"),
        ("Paranasal sinuses Waters + Caldwell", "鼻窦瓦氏位 + 柯氏位", sk,
         [_hv("SK_PA_01"), _hv("SK_PA_02")], "U", "Adult"),
        ("Mandible", "下颌骨", sk, [_hv("SK_Axial_04")], "U", "Adult"),
        ("Temporal bone Stenvers", "颞骨斯氏位", sk, [_hv("SK_Special_05")], "U", "Adult"),
        ("Neck soft tissue AP + LAT", "颈部软组织正侧位", "Human_NECK",
         [_hv("NK_AP_00"), _hv("NK_LAT_00")], "U", "Adult"),
        ("Cervical spine AP + LAT", "颈椎正侧位", "Human_CERVICAL SPINE",
         [_hv("CS_AP_00"), _hv("CS_LAT_00")], "U", "Adult"),
        ("Cervical spine obliques", "颈椎双斜位", "Human_CERVICAL SPINE",
         [_hv("CS_OBL_00"), _hv("CS_OBL_01")], "U", "Adult"),
        ("Cervical spine flexion + extension", "颈椎过屈过伸位", "Human_CERVICAL SPINE",
         [_hv("CS_LAT_01"), _hv("CS_LAT_02")], "U", "Adult"),
        ("Odontoid open mouth", "寰枢椎张口位", "Human_CERVICAL SPINE", [_hv("CS_AP_01")], "U",
         "Adult"),
        ("Thoracic spine AP + LAT", "胸椎正侧位", "Human_THORACIC SPINE",
         [_hv("TS_AP_00"), _hv("TS_LAT_00")], "U", "Adult"),
        ("Lumbar spine AP + LAT", "腰椎正侧位", "Human_LUMBAR SPINE",
         [_hv("LS_AP_00"), _hv("LS_LAT_00")], "U", "Adult"),
        ("Lumbar spine obliques", "腰椎双斜位", "Human_LUMBAR SPINE",
         [_hv("LS_OBL_00"), _hv("LS_OBL_01")], "U", "Adult"),
        ("Lumbar spine flexion + extension", "腰椎过屈过伸位", "Human_LUMBAR SPINE",
         [_hv("LS_LAT_01"), _hv("LS_LAT_02")], "U", "Adult"),
        ("Sacrum and coccyx AP + LAT", "骶尾椎正侧位", "Human_LUMBAR SPINE",
         [_hv("SC_AP_00"), _hv("SC_LAT_00")], "U", "Adult"),
        ("Chest PA", "胸部后前位", "Human_CHEST", [_hv("CH_PA_00")], "U", "Adult"),
        ("Chest PA + LAT", "胸部正侧位", "Human_CHEST", [_hv("CH_PA_00"), _hv("CH_LAT_00")], "U",
         "Adult"),
        ("Chest AP,supine/bedside", "胸部前后位(仰卧/床旁)", "Human_CHEST", [_hv("CH_AP_00")],
         "U", "Adult"),
        ("Abdomen AP supine (KUB)", "腹部仰卧位(KUB)", "Human_ABDOMEN", [_hv("AB_AP_00")], "U",
         "Adult"),
        ("Acute abdomen series", "急腹症系列(仰卧 + 立位)", "Human_ABDOMEN",
         [_hv("AB_AP_00"), _hv("AB_AP_01")], "U", "Adult"),
        ("Abdomen left lateral decubitus", "腹部左侧卧水平位", "Human_ABDOMEN",
         [_hv("AB_AP_02")], "U", "Adult"),
        ("Pelvis AP", "骨盆前后位", "Human_PELVIS", [_hv("PV_AP_00")], "U", "Adult"),
        ("Pelvis inlet + outlet", "骨盆入口位 + 出口位", "Human_PELVIS",
         [_hv("PV_Axial_00"), _hv("PV_Axial_01")], "U", "Adult"),
    ]
    rows += _human_paired_procedures()
    rows += [
        ("Paediatric chest AP", "儿童胸部前后位", "Human_CHEST", ["View_DX_T_P_CH_AP_00"], "U",
         "Pediatric"),
        ("Paediatric abdomen AP", "儿童腹部前后位", "Human_ABDOMEN", ["View_DX_T_P_AB_AP_00"],
         "U", "Pediatric"),
        ("Paediatric hips AP", "儿童双髋前后位", "Human_PELVIS", ["View_DX_T_P_PV_AP_00"], "B",
         "Pediatric"),
    ]
    return rows


# ---------------------------------------------------------------------------------------
# Veterinary catalog (VETDROS)
# ---------------------------------------------------------------------------------------


def _vf(species: str, bp: str, code: str, region: str, img: str, target: int, basis: str,
        stations: list[int], focus: int, ma: float, tech: str, thick: int, cat: str,
        coll: str, limb: str = "") -> Family:
    return Family(f"{species}_{bp}", code, region, img, target, basis, stations, focus, ma,
                  tech, thick, cat, coll, limb=limb)


VF = {
    "D_TH": _vf("Dog", "THORAX", "TH", "THORAX", "chest", 250, "G100", [1, 3], 1, 400, "dog",
                18, "THORAX", "14x17"),
    "D_AB": _vf("Dog", "ABDOMEN", "AB", "ABDOMEN", "abdomen", 300, "G100", [1, 3], 1, 400,
                "dog", 18, "ABDOMEN", "14x17"),
    "D_PV": _vf("Dog", "PELVIS", "PV", "PELVIS", "abdomen", 300, "G100", [1, 3], 1, 400, "dog",
                16, "PELVIS", "14x17"),
    "D_SK": _vf("Dog", "SKULL", "SK", "SKULL", "skull", 300, "G100", [1, 3], 0, 200, "dog", 10,
                "SKULL", "10x12"),
    "D_CS": _vf("Dog", "CERVICAL SPINE", "CS", "CERVICAL SPINE", "spine", 300, "G100", [1, 3],
                0, 200, "dog", 10, "SPINE", "10x12"),
    "D_TL": _vf("Dog", "THORACOLUMBAR SPINE", "TL", "THORACOLUMBAR SPINE", "spine", 300,
                "G100", [1, 3], 1, 320, "dog", 16, "SPINE", "7x17"),
    "D_SH": _vf("Dog", "FORELIMB", "SH", "SHOULDER", "extremity", 400, "N100", [3, 1], 0, 160,
                "dog_limb", 9, "EXTREMITIES_MEDIUM", "8x10", "upper"),
    "D_EL": _vf("Dog", "FORELIMB", "EL", "ELBOW", "extremity", 400, "N100", [3, 1], 0, 160,
                "dog_limb", 7, "EXTREMITIES_MEDIUM", "8x10", "upper"),
    "D_AN": _vf("Dog", "FORELIMB", "AN", "ANTEBRACHIUM", "extremity", 400, "N100", [3, 1], 0,
                160, "dog_limb", 5, "EXTREMITIES_MEDIUM", "10x12", "upper"),
    "D_CP": _vf("Dog", "FORELIMB", "CP", "CARPUS", "extremity", 500, "N100", [3, 1], 0, 100,
                "dog_limb", 4, "EXTREMITIES_SMALL", "8x10", "upper"),
    "D_FM": _vf("Dog", "HINDLIMB", "FM", "FEMUR", "extremity", 400, "N100", [3, 1], 0, 160,
                "dog_limb", 9, "EXTREMITIES_MEDIUM", "10x12", "lower"),
    "D_ST": _vf("Dog", "HINDLIMB", "ST", "STIFLE", "extremity", 400, "N100", [3, 1], 0, 160,
                "dog_limb", 7, "EXTREMITIES_MEDIUM", "8x10", "lower"),
    "D_TB": _vf("Dog", "HINDLIMB", "TB", "TIBIA", "extremity", 400, "N100", [3, 1], 0, 160,
                "dog_limb", 5, "EXTREMITIES_MEDIUM", "10x12", "lower"),
    "D_TR": _vf("Dog", "HINDLIMB", "TR", "TARSUS", "extremity", 500, "N100", [3, 1], 0, 100,
                "dog_limb", 4, "EXTREMITIES_SMALL", "8x10", "lower"),
    "C_TH": _vf("Cat", "THORAX", "TH", "THORAX", "chest", 250, "N100", [3, 1], 0, 200, "cat", 9,
                "THORAX", "10x12"),
    "C_AB": _vf("Cat", "ABDOMEN", "AB", "ABDOMEN", "abdomen", 300, "N100", [3, 1], 0, 200,
                "cat", 9, "ABDOMEN", "10x12"),
    "C_PV": _vf("Cat", "PELVIS", "PV", "PELVIS", "abdomen", 300, "N100", [3, 1], 0, 200, "cat",
                8, "PELVIS", "10x12"),
    "C_SK": _vf("Cat", "SKULL", "SK", "SKULL", "skull", 300, "N100", [3, 1], 0, 200, "cat", 6,
                "SKULL", "8x10"),
    "C_SP": _vf("Cat", "SPINE", "SP", "SPINE", "spine", 300, "N100", [3, 1], 0, 200, "cat", 8,
                "SPINE", "7x17"),
    "C_FL": _vf("Cat", "FORELIMB", "FL", "FORELIMB", "extremity", 400, "N100", [3, 1], 0, 100,
                "cat", 4, "EXTREMITIES_SMALL", "8x10", "upper"),
    "C_HL": _vf("Cat", "HINDLIMB", "HL", "HINDLIMB", "extremity", 400, "N100", [3, 1], 0, 100,
                "cat", 5, "EXTREMITIES_SMALL", "10x12", "lower"),
}

VET_BODY_PARTS = [  # species, suffix, en, zh
    ("Dog", "THORAX", "Thorax", "胸部"), ("Dog", "ABDOMEN", "Abdomen", "腹部"),
    ("Dog", "PELVIS", "Pelvis", "骨盆"), ("Dog", "SKULL", "Skull", "头颅"),
    ("Dog", "CERVICAL SPINE", "Cervical spine", "颈椎"),
    ("Dog", "THORACOLUMBAR SPINE", "Thoracolumbar spine", "胸腰椎"),
    ("Dog", "FORELIMB", "Forelimb", "前肢"), ("Dog", "HINDLIMB", "Hindlimb", "后肢"),
    ("Cat", "THORAX", "Thorax", "胸部"), ("Cat", "ABDOMEN", "Abdomen", "腹部"),
    ("Cat", "PELVIS", "Pelvis", "骨盆"), ("Cat", "SKULL", "Skull", "头颅"),
    ("Cat", "SPINE", "Spine", "脊柱"), ("Cat", "FORELIMB", "Forelimb", "前肢"),
    ("Cat", "HINDLIMB", "Hindlimb", "后肢"),
]


def _vv(fam: str, suffix: str, en: str, zh: str, pos: str, kv: float, mas: float,
        lat: str = "U", **extra: Any) -> ViewSpec:
    f = VF[fam]
    return ViewSpec(f"View_DX_V_{fam[0]}_{f.code}_{suffix}", en, zh, pos, lat, f, kv, mas, extra)


def _vpair(fam: str, pos: str, n: int, en: str, zh: str, kv: float, mas: float,
           **extra: Any) -> list[ViewSpec]:
    return [_vv(fam, f"{pos}_{2 * n + k:02d}", f"{en},{side_en}", f"{side_zh}{zh}", pos, kv, mas,
                lat=lat, **extra) for k, (lat, side_en, side_zh) in enumerate(SIDES)]


def vet_views() -> list[ViewSpec]:
    lat = {"rotate": "270"}
    return [
        _vv("D_TH", "LAT_00", "Thorax LAT,left recumbency", "胸部左侧位", "LAT", 75, 5, **lat),
        _vv("D_TH", "LAT_01", "Thorax LAT,right recumbency", "胸部右侧位", "LAT", 75, 5, **lat),
        _vv("D_TH", "VD_00", "Thorax VD", "胸部腹背位", "VD", 80, 6.3),
        _vv("D_TH", "DV_00", "Thorax DV", "胸部背腹位", "DV", 80, 6.3),
        _vv("D_AB", "LAT_00", "Abdomen LAT,left recumbency", "腹部左侧位", "LAT", 75, 10, **lat),
        _vv("D_AB", "LAT_01", "Abdomen LAT,right recumbency", "腹部右侧位", "LAT", 75, 10,
            **lat),
        _vv("D_AB", "VD_00", "Abdomen VD", "腹部腹背位", "VD", 80, 12.5),
        _vv("D_PV", "VD_00", "Pelvis VD,hips extended", "骨盆腹背位(髋伸展)", "VD", 75, 12.5),
        _vv("D_PV", "VD_01", "Pelvis VD,frog-leg", "骨盆腹背位(蛙腿)", "VD", 75, 12.5),
        _vv("D_PV", "LAT_00", "Pelvis LAT", "骨盆侧位", "LAT", 80, 16, **lat),
        _vv("D_SK", "LAT_00", "Skull LAT", "头颅侧位", "LAT", 70, 8, **lat),
        _vv("D_SK", "DV_00", "Skull DV", "头颅背腹位", "DV", 75, 10),
        _vv("D_SK", "Special_00", "Frontal sinus rostrocaudal", "额窦吻尾位", "RCd", 75, 12.5),
        _vv("D_SK", "Special_01", "Tympanic bullae,open mouth", "鼓泡张口位", "RCd", 70, 10),
        _vv("D_CS", "LAT_00", "Cervical spine LAT", "颈椎侧位", "LAT", 70, 10, **lat),
        _vv("D_CS", "VD_00", "Cervical spine VD", "颈椎腹背位", "VD", 70, 12.5),
        _vv("D_TL", "LAT_00", "Thoracolumbar spine LAT", "胸腰椎侧位", "LAT", 75, 12.5, **lat),
        _vv("D_TL", "VD_00", "Thoracolumbar spine VD", "胸腰椎腹背位", "VD", 80, 16),
        *_vpair("D_SH", "LAT", 0, "Shoulder ML", "肩关节侧位", 60, 4),
        *_vpair("D_SH", "CdCr", 0, "Shoulder CdCr", "肩关节后前位", 60, 5),
        *_vpair("D_EL", "LAT", 0, "Elbow ML,flexed", "肘关节屈曲侧位", 55, 3.2),
        *_vpair("D_EL", "CrCd", 0, "Elbow CrCd", "肘关节前后位", 55, 3.2),
        *_vpair("D_AN", "LAT", 0, "Radius and ulna ML", "桡尺骨侧位", 55, 2.5),
        *_vpair("D_AN", "CrCd", 0, "Radius and ulna CrCd", "桡尺骨前后位", 55, 2.5),
        *_vpair("D_CP", "LAT", 0, "Carpus and manus ML", "腕部侧位", 50, 2),
        *_vpair("D_CP", "DPa", 0, "Carpus and manus DPa", "腕部背掌位", 50, 2),
        *_vpair("D_FM", "LAT", 0, "Femur ML", "股骨侧位", 60, 4),
        *_vpair("D_FM", "CrCd", 0, "Femur CrCd", "股骨前后位", 60, 5),
        *_vpair("D_ST", "LAT", 0, "Stifle ML", "膝关节侧位", 55, 3.2),
        *_vpair("D_ST", "CdCr", 0, "Stifle CdCr", "膝关节后前位", 55, 4),
        *_vpair("D_TB", "LAT", 0, "Tibia ML", "胫骨侧位", 55, 2.5),
        *_vpair("D_TB", "CdCr", 0, "Tibia CdCr", "胫骨后前位", 55, 2.5),
        *_vpair("D_TR", "LAT", 0, "Tarsus and pes ML", "跗部侧位", 50, 2),
        *_vpair("D_TR", "DPl", 0, "Tarsus and pes DPl", "跗部背跖位", 50, 2),
        _vv("C_TH", "LAT_00", "Thorax LAT,left recumbency", "胸部左侧位", "LAT", 60, 2.5, **lat),
        _vv("C_TH", "LAT_01", "Thorax LAT,right recumbency", "胸部右侧位", "LAT", 60, 2.5,
            **lat),
        _vv("C_TH", "VD_00", "Thorax VD", "胸部腹背位", "VD", 60, 3.2),
        _vv("C_TH", "DV_00", "Thorax DV", "胸部背腹位", "DV", 60, 3.2),
        _vv("C_AB", "LAT_01", "Abdomen LAT,right recumbency", "腹部右侧位", "LAT", 60, 4, **lat),
        _vv("C_AB", "VD_00", "Abdomen VD", "腹部腹背位", "VD", 62, 5),
        _vv("C_PV", "VD_00", "Pelvis VD", "骨盆腹背位", "VD", 58, 3.2),
        _vv("C_PV", "LAT_00", "Pelvis LAT", "骨盆侧位", "LAT", 60, 3.2, **lat),
        _vv("C_SK", "LAT_00", "Skull LAT", "头颅侧位", "LAT", 55, 3.2, **lat),
        _vv("C_SK", "DV_00", "Skull DV", "头颅背腹位", "DV", 58, 4),
        _vv("C_SP", "LAT_00", "Spine LAT", "脊柱侧位", "LAT", 58, 3.2, **lat),
        _vv("C_SP", "VD_00", "Spine VD", "脊柱腹背位", "VD", 60, 4),
        *_vpair("C_FL", "LAT", 0, "Forelimb ML", "前肢侧位", 50, 1.6),
        *_vpair("C_FL", "CrCd", 0, "Forelimb CrCd", "前肢前后位", 50, 1.6),
        *_vpair("C_HL", "LAT", 0, "Hindlimb ML", "后肢侧位", 52, 2),
        *_vpair("C_HL", "CdCr", 0, "Hindlimb CdCr", "后肢后前位", 52, 2),
    ]


def vet_procedures() -> list[tuple]:
    """(en, zh, body part, views, laterality, category) in procedure-id order."""
    def d(x: str) -> str:
        return f"View_DX_V_D_{x}"

    def c(x: str) -> str:
        return f"View_DX_V_C_{x}"

    rows: list[tuple] = [
        ("Dog thorax three views", "犬胸部三体位", "Dog_THORAX",
         [d("TH_LAT_01"), d("TH_LAT_00"), d("TH_VD_00")]),
        ("Dog thorax right LAT + VD", "犬胸部右侧位 + 腹背位", "Dog_THORAX",
         [d("TH_LAT_01"), d("TH_VD_00")]),
        ("Dog thorax right LAT + DV", "犬胸部右侧位 + 背腹位", "Dog_THORAX",
         [d("TH_LAT_01"), d("TH_DV_00")]),
        ("Dog abdomen right LAT + VD", "犬腹部右侧位 + 腹背位", "Dog_ABDOMEN",
         [d("AB_LAT_01"), d("AB_VD_00")]),
        ("Dog abdomen left + right LAT + VD", "犬腹部双侧位 + 腹背位", "Dog_ABDOMEN",
         [d("AB_LAT_01"), d("AB_LAT_00"), d("AB_VD_00")]),
        ("Dog hip dysplasia VD", "犬髋关节发育不良腹背位", "Dog_PELVIS", [d("PV_VD_00")]),
        ("Dog pelvis VD + LAT", "犬骨盆腹背位 + 侧位", "Dog_PELVIS",
         [d("PV_VD_00"), d("PV_LAT_00")]),
        ("Dog pelvis VD frog-leg", "犬骨盆蛙腿位", "Dog_PELVIS", [d("PV_VD_01")]),
        ("Dog skull LAT + DV", "犬头颅侧位 + 背腹位", "Dog_SKULL", [d("SK_LAT_00"), d("SK_DV_00")]),
        ("Dog frontal sinus", "犬额窦", "Dog_SKULL", [d("SK_Special_00")]),
        ("Dog tympanic bullae", "犬鼓泡", "Dog_SKULL", [d("SK_Special_01"), d("SK_DV_00")]),
        ("Dog cervical spine LAT + VD", "犬颈椎侧位 + 腹背位", "Dog_CERVICAL SPINE",
         [d("CS_LAT_00"), d("CS_VD_00")]),
        ("Dog thoracolumbar spine LAT + VD", "犬胸腰椎侧位 + 腹背位", "Dog_THORACOLUMBAR SPINE",
         [d("TL_LAT_00"), d("TL_VD_00")]),
    ]
    limbs = [
        ("shoulder", "肩关节", "Dog_FORELIMB", ["SH_LAT", "SH_CdCr"]),
        ("elbow", "肘关节", "Dog_FORELIMB", ["EL_LAT", "EL_CrCd"]),
        ("radius and ulna", "桡尺骨", "Dog_FORELIMB", ["AN_LAT", "AN_CrCd"]),
        ("carpus", "腕部", "Dog_FORELIMB", ["CP_LAT", "CP_DPa"]),
        ("femur", "股骨", "Dog_HINDLIMB", ["FM_LAT", "FM_CrCd"]),
        ("stifle", "膝关节", "Dog_HINDLIMB", ["ST_LAT", "ST_CdCr"]),
        ("tibia", "胫骨", "Dog_HINDLIMB", ["TB_LAT", "TB_CdCr"]),
        ("tarsus", "跗部", "Dog_HINDLIMB", ["TR_LAT", "TR_DPl"]),
    ]
    out = [(en, zh, bp, vs, "U", "Adult") for en, zh, bp, vs in rows]
    for name, zh, bp, vs in limbs:
        for k, (lat, side_en, side_zh) in enumerate(SIDES):
            out.append((f"Dog {name} two views,{side_en}", f"犬{side_zh}{zh}两体位", bp,
                        [d(f"{x}_0{k}") for x in vs], lat, "Adult"))
    cat_rows = [
        ("Cat thorax right LAT + VD", "猫胸部右侧位 + 腹背位", "Cat_THORAX",
         [c("TH_LAT_01"), c("TH_VD_00")]),
        ("Cat thorax three views", "猫胸部三体位", "Cat_THORAX",
         [c("TH_LAT_01"), c("TH_LAT_00"), c("TH_VD_00")]),
        ("Cat thorax right LAT + DV", "猫胸部右侧位 + 背腹位", "Cat_THORAX",
         [c("TH_LAT_01"), c("TH_DV_00")]),
        ("Cat abdomen right LAT + VD", "猫腹部右侧位 + 腹背位", "Cat_ABDOMEN",
         [c("AB_LAT_01"), c("AB_VD_00")]),
        ("Cat thorax and abdomen survey", "猫胸腹联合检查", "Cat_ABDOMEN",
         [c("TH_LAT_01"), c("TH_VD_00"), c("AB_LAT_01"), c("AB_VD_00")]),
        ("Cat pelvis VD + LAT", "猫骨盆腹背位 + 侧位", "Cat_PELVIS",
         [c("PV_VD_00"), c("PV_LAT_00")]),
        ("Cat skull LAT + DV", "猫头颅侧位 + 背腹位", "Cat_SKULL", [c("SK_LAT_00"), c("SK_DV_00")]),
        ("Cat spine LAT + VD", "猫脊柱侧位 + 腹背位", "Cat_SPINE", [c("SP_LAT_00"), c("SP_VD_00")]),
    ]
    out += [(en, zh, bp, vs, "U", "Adult") for en, zh, bp, vs in cat_rows]
    for name, zh, bp, vs in (("forelimb", "前肢", "Cat_FORELIMB", ["FL_LAT", "FL_CrCd"]),
                             ("hindlimb", "后肢", "Cat_HINDLIMB", ["HL_LAT", "HL_CdCr"])):
        for k, (lat, side_en, side_zh) in enumerate(SIDES):
            out.append((f"Cat {name} two views,{side_en}", f"猫{side_zh}{zh}两体位", bp,
                        [c(f"{x}_0{k}") for x in vs], lat, "Adult"))
    return out


# ---------------------------------------------------------------------------------------
# Technique derivation
# ---------------------------------------------------------------------------------------


def station_technique(kv: float, mas: float, basis: str, station: int, sid: int,
                      trunk: bool) -> tuple[float, float]:
    """Move a chart technique (basis ``G100``/``G180``/``N100``) to a station and SID."""
    basis_grid = basis.startswith("G")
    basis_sid = int(basis[1:])
    st_grid = STATIONS[station]["grid"]
    mas = mas * (sid / basis_sid) ** 2
    if basis_grid and not st_grid:
        mas /= BUCKY_FACTOR
        if trunk:
            kv_new = kv * NO_GRID_KV
            mas *= (kv / kv_new) ** KV_EXPONENT
            kv = kv_new
    elif st_grid and not basis_grid:
        mas *= BUCKY_FACTOR
    return kv, mas


def station_sid(spec: ViewSpec, station: int, product: str) -> int:
    basis = spec.extra.get("basis", spec.fam.basis)
    if station in (2, 3) and basis == "G180":
        return 180
    return SID[product][station]


def exposures_for(spec: ViewSpec, product: str) -> list[dict[str, Any]]:
    fam = spec.fam
    basis = spec.extra.get("basis", fam.basis)
    focus = spec.extra.get("focus", fam.focus)
    ma_pref = spec.extra.get("ma", fam.ma)
    aec = spec.extra.get("aec", fam.aec)
    trunk = fam.tech in ("trunk", "chest", "dog")
    out = []
    for st in sorted(STATIONS):
        sid = station_sid(spec, st, product)
        for size in sorted(PATIENT_SIZES):
            dkv, fmas = (0.0, 1.0) if size == "Medium" else SIZE_STEPS[fam.tech][size]
            kv0 = max(spec.kv + dkv, 40.0)
            kv, mas = station_technique(kv0, spec.mas * fmas, basis, st, sid, trunk)
            kv = float(max(40, min(150, round(kv))))
            ma, ms, mas_r = split_mas(mas, kv, ma_pref, focus)
            out.append({
                "work_station_id": st,
                "patient_size": size,
                "config_object": {"Common": {
                    "AECDensity": 0, "AECField": aec, "AECFilm": 1, "Dose": 0,
                    "ExposureMode": 0, "Focus": focus, "TOD": 0, "TubeLoad": 0,
                    "kV": clean_number(kv), "mA": clean_number(ma), "mAs": clean_number(mas_r),
                    "ms": clean_number(ms),
                }},
            })
    return out


def devices_for(spec: ViewSpec, product: str, apr_number: int) -> list[dict[str, Any]]:
    thick = spec.extra.get("thick", spec.fam.thick)
    out = []
    for st in sorted(STATIONS):
        out.append({"work_station_id": st, "config_object": {"Common": {
            "APRNumber": str(apr_number), "DetectorAngle": 0, "FpdAcquisitionMode": "101",
            "FrameRate": 0, "GridSpeed": 0, "GridType": STATIONS[st]["GridType"],
            "PositionNumber": STATIONS[st]["PositionNumber"],
            "SID": station_sid(spec, st, product), "Thickness": thick,
            "TubeAngle": spec.extra.get("angle", 0)}}})
    return out


def orientation(spec: ViewSpec, vet: bool) -> tuple[str, str]:
    """(PatientOrientationRow, PatientOrientationColumn) of the displayed image."""
    pos, limb = spec.pos, spec.fam.limb
    if vet:
        if limb:
            return ("CD", "DI") if pos == "LAT" else ("LE", "DI")
        if pos == "LAT":
            return "CD", "V"
        return "LE", "CD"
    lateral = pos == "LAT"
    if limb == "upper":
        return ("A" if lateral else "L"), "H"
    if limb == "lower":
        return ("A" if lateral else "L"), "F"
    return ("P" if lateral else "L"), "F"


def view_record(spec: ViewSpec, seq: int, product: str, patient_type: str) -> dict[str, Any]:
    fam = spec.fam
    vet = product == "VETDROS"
    stations = spec.extra.get("stations", fam.stations)
    coll = COLL[spec.extra.get("coll", fam.coll)]
    rotate = spec.extra.get("rotate", "0")
    flip = "YES" if spec.pos in ("PA", "DV") else "NO"
    row, col = orientation(spec, vet)
    return {
        "view_id": spec.vid,
        "name": {"en": spec.en, "zh": spec.zh},
        "view_position": spec.pos,
        "application": "RAD",
        "anatomic_region": spec.extra.get("region", fam.region),
        "patient_type": patient_type,
        "body_part_id": fam.body_part,
        "icon": f"/Image/Position/{patient_type}/{spec.vid}",
        "glyph": fam.code,
        "modality": "DX",
        "work_station_id": spec.extra.get("ws", stations[0]),
        "apr_id": spec.vid,
        "img_proc_id": fam.img,
        "laterality": spec.lat,
        "dx": {
            "CollimatorCenter": "1", "CollimatorFilter": "0", "CollimatorNoChange": False,
            "CollimatorSize": f"{coll[0]}IN({coll[1]}CM)X{coll[2]}IN({coll[3]}CM)",
            "CollimatorSizeLength": f"{coll[2]}IN", "CollimatorSizeWidth": f"{coll[0]}IN",
            "ImageHorizontalFlip": flip, "ImageLaterality": spec.lat, "ImageRotate": rotate,
            "LabelPosition": "RIGHT TOP" if spec.pos == "LAT" else "LEFT TOP",
            "LabelStyle": "", "PatientOrientationColumn": col,
            "PatientOrientationRow": row, "RatioFactorLength": 0, "RatioFactorSize": 0,
            "RatioFactorThickness": 0, "RatioFactorWeight": 0, "StandPos": "43",
            "TargetEXI": spec.extra.get("target", fam.target),
        },
        "sort": seq,
        "is_enabled": True,
    }


def apr_record(spec: ViewSpec, seq: int, product: str, patient_type: str) -> dict[str, Any]:
    thick = spec.extra.get("thick", spec.fam.thick)
    return {
        "apr_id": spec.vid,
        "name": {"en": spec.en, "zh": spec.zh},
        "patient_type": patient_type,
        "body_part_id": spec.fam.body_part,
        "view_position": spec.pos,
        "category": spec.fam.apr_cat,
        "modality": "DX",
        "thickness": {s: max(1, round(thick * THICKNESS_FACTOR[s])) for s in PATIENT_SIZES},
        "exposures": exposures_for(spec, product),
        "devices": devices_for(spec, product, seq),
        "sort": 0,
        "is_enabled": True,
    }


def _procedures(rows: list[tuple], prefix: str, id_base: int) -> list[dict[str, Any]]:
    out = []
    for n, (en, zh, bp, views, lat, cat) in enumerate(rows, start=1):
        pid = f"{prefix}-{n:04d}"
        out.append({
            "id": str(id_base + n), "procedure_id": pid, "procedure_code": pid,
            "name": {"en": en, "zh": zh}, "patient_type": bp.split("_", 1)[0],
            "body_part_id": bp, "procedure_type": "NORMAL", "fast_search": False,
            "protocol_laterality": lat, "procedure_category": cat, "modality": "DX",
            "sort": n, "is_enabled": True, "views": views,
        })
    return out


def build(product: str) -> dict[str, Any]:
    """The catalog document of one product."""
    if product == "DROS":
        types = [("Human", "Human", "人")]
        bps = [(f"Human_{s}", en, zh, "Human") for s, en, zh in HUMAN_BODY_PARTS]
        specs = human_views()
        procs = _procedures(human_procedures(), "P0", 0)
        type_base, bp_base, view_base = 0, 0, 0
    else:
        types = [("Dog", "Dog", "犬"), ("Cat", "Cat", "猫")]
        bps = [(f"{sp}_{s}", en, zh, sp) for sp, s, en, zh in VET_BODY_PARTS]
        specs = vet_views()
        procs = _procedures(vet_procedures(), "P1", 1000)
        type_base, bp_base, view_base = 100, 100, 1000
    patient_types = [{
        "id": str(type_base + i), "patient_type_id": pid, "name": {"en": en, "zh": zh},
        "description": en, "sort": i, "is_enabled": True,
    } for i, (pid, en, zh) in enumerate(types, start=1)]
    body_parts = []
    for i, (bid, en, zh, pt) in enumerate(bps, start=1):
        body_parts.append({"id": str(bp_base + i), "body_part_id": bid,
                           "name": {"en": en, "zh": zh}, "description": en, "patient_type": pt,
                           "category": "DX", "sort": i, "is_enabled": True})
    views, aprs = [], []
    for i, spec in enumerate(specs, start=1):
        pt = spec.fam.body_part.split("_", 1)[0]
        views.append(view_record(spec, i, product, pt))
        aprs.append(apr_record(spec, view_base + i, product, pt))
    stations = {str(k): {"name": {"en": STATION_NAMES[k][0], "zh": STATION_NAMES[k][1]},
                         "SID": SID[product][k], **STATIONS[k]} for k in STATIONS}
    return {"product": product, "format": 1, "work_stations": stations,
            "patient_types": patient_types, "body_parts": body_parts, "procedures": procs,
            "views": views, "aprs": aprs}


def render(product: str) -> bytes:
    """The JSON bytes of one product file, as shipped: one record per line."""
    doc = build(product)
    lines = ["{"]
    items = list(doc.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        if isinstance(value, list):
            lines.append(f"{json.dumps(key)}: [")
            lines += [json.dumps(r, ensure_ascii=False) + ("," if i < len(value) - 1 else "")
                      for i, r in enumerate(value)]
            lines.append("]" + comma)
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode("utf-8")


FILES = {"DROS": "dros.json", "VETDROS": "vetdros.json"}


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the shipped catalog files."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on difference")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    args = ap.parse_args(argv)
    status = 0
    for product, name in FILES.items():
        path = args.out / name
        data = render(product)
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                print(f"{path}: differs from the charts", file=sys.stderr)
                status = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"{path}: {len(data)} bytes")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
