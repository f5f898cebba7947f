"""Resource service: software info, roles and option lists against the seed's example
replies, the per-install serial number, view icons from the catalog."""

from __future__ import annotations

import os
import re
from datetime import datetime

import pytest

from dios.auth import AuthService
from dios.codes import CATALOG_NOT_FOUND, INVALID_FIELD, NOT_FOUND, DiosError
from dios.resource import OPTIONS, ResourceService
from dios.resource.service import SERIAL_FILE, _digest, package_version
from dios.store import open_database
from dios.study import model
from tests.test_store import SeedCatalog
from tests.test_study import SEED


@pytest.fixture
def auth(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'dios.db'}")
    yield AuthService(db, tmp_path, scrypt_params=(2**12, 8, 1))
    db.close()


@pytest.fixture
def res(tmp_path, auth):
    return ResourceService(tmp_path, auth, SeedCatalog(), product="DROS", fpd="Simulator",
                           gen="Simulator")


def test_software_info_is_the_seeds_shape(res, auth):
    seed = SEED["software_info"]["data"]
    got = res.software_info()
    assert list(got) == list(seed)
    assert (got["FPD"], got["GEN"], got["language"], got["product"]) == (
        "Simulator", "Simulator", ["en", "zh"], "DROS")
    assert list(got["server"]) == list(seed["server"])
    for name, entry in got["server"].items():
        assert list(entry) == list(seed["server"][name]), name
        datetime.strptime(entry["build"], "%Y-%m-%d %H:%M:%S")
        assert entry["desc"] and isinstance(entry["desc"], str)
        assert re.fullmatch(re.escape(package_version()) + r"-g[0-9a-f]{7}", entry["version"])
        names = [re.fullmatch(r"[0-9a-f]{8}\[([a-z_]+)\]", s).group(1) for s in entry["submodule"]]
        want = [re.search(r"\[(.*)\]", s).group(1) for s in seed["server"][name]["submodule"]]
        assert names == want, name
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){3}", got["sn"])
    guest = auth.verify(got["guest"])
    assert (guest.uid, guest.name, guest.role) == (2, "guest", "guest")
    assert res.software_info(product="VETDROS")["product"] == "VETDROS"


def test_drivers_are_what_the_caller_says(tmp_path, auth):
    got = ResourceService(tmp_path, auth, fpd="CSI_4343", gen="SerialGen").software_info()
    assert (got["FPD"], got["GEN"]) == ("CSI_4343", "SerialGen")
    with pytest.raises(ValueError):
        ResourceService(tmp_path, auth, product="CT")


def test_serial_number_is_stable_and_private(tmp_path, auth, res):
    sn = res.software_info()["sn"]
    assert ResourceService(tmp_path, auth).software_info()["sn"] == sn
    assert (os.stat(tmp_path / SERIAL_FILE).st_mode & 0o777) == 0o600
    other = tmp_path / "other"
    other.mkdir()
    assert ResourceService(other, auth).sn != sn


def test_source_digest_follows_content(tmp_path):
    from dios.resource import service as svc_mod

    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("x = 1\n")
    old_root = svc_mod._ROOT
    try:
        svc_mod._ROOT = tmp_path
        first = _digest([a])
        assert _digest([a]) == first and _digest([b]) != first  # the name counts too
        a.write_text("x = 2\n")
        assert _digest([a]) != first
    finally:
        svc_mod._ROOT = old_root


def test_roles_are_the_seeds(res):
    assert res.roles() == SEED["roles"]["data"]


def test_sex_options_are_the_seeds(res):
    assert res.options("sex", "en", "VETDROS") == SEED["options"]["data"]
    human = res.options("sex", "en", "DROS")
    assert list(human) == ["@type", "option"]
    assert human["option"] == [*SEED["options"]["data"]["option"][:3],
                               {"text": "Unknown", "value": "U"}]
    assert res.options("sex", "zh", "DROS")["option"][3] == {"text": "未知", "value": "U"}
    # every human sex that validation accepts is offered
    assert {o["value"] for o in human["option"]} == {"M", "F", "O", "U"} <= set(model.SEXES)
    zh = res.options("sex", "zh", "VETDROS")
    assert [o["value"] for o in zh["option"]] == ["M", "F", "O", "CM", "SF"]
    assert zh["option"][0]["text"] == "男"


def test_option_lists_match_what_validation_accepts(res):
    enums = {"patient_size": model.PATIENT_SIZES, "study_type": model.STUDY_TYPES,
             "sex_neutered": model.SEX_NEUTERED, "pregnancy_status": model.PREGNANCY_STATUSES,
             "modality": model.MODALITIES, "study_status": model.STUDY_STATUSES,
             "study_lock": model.STUDY_LOCKS, "expose_status": model.EXPOSE_STATUSES,
             "judged_status": model.JUDGED_STATUSES, "send_status": model.SEND_STATUSES,
             "storage_status": model.STORAGE_STATUSES, "role": ("service", "admin", "mgr", "tech")}
    for kind, values in enums.items():
        for lang in ("en", "zh"):
            got = res.options(kind, lang)
            assert got["@type"] == "type.googleapis.com/dr.resource.OptionReply"
            assert [o["value"] for o in got["option"]] == list(values), kind
            assert all(list(o) == ["text", "value"] and o["text"] for o in got["option"])
    for sex in ("M", "F", "O", "CM", "SF"):
        assert sex in model.SEXES
    assert set(res.option_kinds()) == {"sex", *OPTIONS}
    assert res.options("pregnancy_status", "zh")["option"][0]["text"] == "未怀孕"


def test_option_errors(res):
    with pytest.raises(DiosError) as e:
        res.options("colour")
    assert e.value.code is NOT_FOUND and e.value.data["field"] == "kind"
    for bad in ("", None, 5):
        with pytest.raises(DiosError) as e:
            res.options(bad)
        assert e.value.code is INVALID_FIELD


def test_view_icons_come_from_the_catalog(res, tmp_path, auth):
    png, media = res.view_icon("/Image/Position/Human/skull.ap.table.x.png")
    assert media == "image/png" and png.startswith(b"\x89PNG")
    png, _ = res.view_icon("View_DX_T_A_SK_AP_00")
    assert png.endswith(b"View_DX_T_A_SK_AP_00")
    for bad, code in (("/Image/Position/Human/none.png", CATALOG_NOT_FOUND),
                      ("No_Such_View", CATALOG_NOT_FOUND), ("", INVALID_FIELD),
                      (None, INVALID_FIELD)):
        with pytest.raises(DiosError) as e:
            res.view_icon(bad)
        assert e.value.code is code
    with pytest.raises(DiosError) as e:
        ResourceService(tmp_path, auth).view_icon("View_DX_T_A_SK_AP_00")
    assert e.value.code is NOT_FOUND


def test_view_icons_with_the_real_catalog(tmp_path, auth):
    from dios.catalog.service import CatalogService

    cat = CatalogService()
    res = ResourceService(tmp_path, auth, cat)
    view = cat.views(product="DROS")[0]
    for name in (view["view_icon_name"], view["view_big_icon_name"], view["view_id"]):
        png, media = res.view_icon(name)
        assert media == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n", name
    with pytest.raises(DiosError) as e:
        res.view_icon("/Image/Position/Human/../../etc/passwd.png")
    assert e.value.code is CATALOG_NOT_FOUND
