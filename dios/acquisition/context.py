"""The typed exposure context: everything one image's acquisition needs, built in one place.

:func:`build_context` reads the study service's record of an image (study, patient,
series, image) and the catalog's view (processing settings, APR technique for the
patient size and work station) and returns an :class:`ExposureContext`. The DICOM writer
(``as_dicom()`` of each part), the pipeline profile (:class:`ViewSettings`), the store
(file paths) and the generator (the technique) all read it; nothing else maps study
fields onto DICOM inputs. Human and veterinary studies go through the same code: the
animal-only fields are dropped for a human patient, and the sex codes of neutered
animals (CM/SF) map onto DICOM's M/F with PatientSexNeutered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from dios.codes import INTERNAL, DiosError
from dios.devices.backends import Technique
from dios.dicom.modules import ANIMAL_ONLY_FIELDS, PATIENT_FIELDS


class ImageRecords(Protocol):
    """What the context needs from the study service."""

    def image_context(self, sop_uid: str) -> dict[str, Any]: ...


class ViewCatalog(Protocol):
    """What the context needs from the catalog."""

    def view_processing(self, view_id: str) -> dict[str, Any]: ...
    def tech_params(self, view_id: str, patient_size: str, work_station_id: int,
                    product: str | None = None) -> dict[str, Any]: ...


#: Patient fields that only describe animals (left out of a human patient's file).
ANIMAL_ONLY = ANIMAL_ONLY_FIELDS


@dataclass(frozen=True)
class PatientInfo:
    """The patient as the DICOM Patient module takes it."""

    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = "O"            # DICOM M/F/O ("" = unknown)
    patient_dob: str = ""
    patient_age: str = ""
    patient_type: str = "Human"
    patient_size: str = ""
    weight: float | None = None
    length: float | None = None
    thickness: float | None = None
    patient_english_name: str = ""
    patient_former_name: str = ""
    other_patient_names: str = ""
    other_patient_ids: str = ""
    pregnancy_status: str = ""
    is_sedation: bool = False
    is_anaesthesia: bool = False
    owner_name: str = ""
    variety: str = ""
    sex_neutered: str = ""
    chip_number: str = ""

    @property
    def is_animal(self) -> bool:
        return (self.patient_type or "Human") not in ("Human", "SpecialType")

    def as_dicom(self) -> dict[str, Any]:
        """The DICOM writer's ``patient`` mapping (empty values left out)."""
        out = {k: v for k, v in dataclasses.asdict(self).items()
               if v not in (None, "") and k in PATIENT_FIELDS}
        for flag in ("is_anaesthesia", "is_sedation"):
            if not out.get(flag):
                out.pop(flag, None)
        if not self.is_animal:
            for key in ANIMAL_ONLY:  # the seed's forms send them for every patient
                out.pop(key, None)
        out["patient_sex"] = self.patient_sex or "O"
        return out


@dataclass(frozen=True)
class StudyInfo:
    study_instance_uid: str
    study_id: str
    accession_number: str = ""
    ref_physician: str = ""
    study_description: str = ""
    study_datetime: str = ""
    operator_name: str = ""

    def as_dicom(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SeriesInfo:
    series_instance_uid: str
    series_number: int = 1
    body_part: str = ""
    view_position: str = ""
    protocol_name: str = ""

    def as_dicom(self, *, with_view_position: bool = True) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not with_view_position:
            out.pop("view_position")
        return out


@dataclass(frozen=True)
class ImageInfo:
    sop_instance_uid: str
    instance_number: int = 1
    image_laterality: str = "U"

    def as_dicom(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ViewSettings:
    """The catalog's view: processing profile, presentation and target exposure index."""

    view_id: str = ""
    img_proc_id: str = "default"
    rotate: int = 0
    hflip: bool = False
    target_ei: float | None = None
    body_part: str = ""
    view_position: str = ""
    laterality: str = "U"
    description: str = ""
    sid_cm: float | None = None

    @classmethod
    def from_catalog(cls, view: dict[str, Any], dp: dict[str, Any] | None = None) -> ViewSettings:
        sid = (dp or {}).get("SID")
        target = view.get("TargetEXI")
        return cls(view_id=str(view.get("view_id", "")),
                   img_proc_id=str(view.get("img_proc_id") or "default"),
                   rotate=int(view.get("ImageRotate", 0) or 0),
                   hflip=flag(view.get("ImageHorizontalFlip", False)),
                   target_ei=float(target) if target else None,
                   body_part=str(view.get("body_part") or ""),
                   view_position=str(view.get("view_position") or ""),
                   laterality=str(view.get("laterality") or "U"),
                   description=str(view.get("view_description") or ""),
                   sid_cm=float(sid) if sid else None)


@dataclass(frozen=True)
class ExposureContext:
    """One image's acquisition: who, what, how and where its files go."""

    sop_instance_uid: str
    study_id: str
    product: str
    patient: PatientInfo
    study: StudyInfo
    series: SeriesInfo
    image: ImageInfo
    view: ViewSettings
    technique: Technique = field(default_factory=Technique)
    dicom_path: Path | None = None
    preview_path: Path | None = None

    def with_technique(self, technique: Technique) -> ExposureContext:
        """The same context with the technique the generator accepted."""
        return dataclasses.replace(self, technique=technique)


def flag(value: Any) -> bool:
    """A catalog yes/no value (bool, 0/1 or YES/NO/TRUE/FALSE text)."""
    if isinstance(value, str):
        return value.strip().upper() in ("YES", "TRUE", "1", "Y")
    return bool(value)


def technique_from_ep(ep: dict[str, Any]) -> Technique:
    """The generator technique of a catalog ``ep`` block (tech params)."""
    try:
        return Technique(kv=float(ep["kV"]), ma=float(ep["mA"]), ms=float(ep["ms"]),
                         mas=float(ep["mAs"]), mode=int(ep.get("ExposureMode", 0)),
                         focus=int(ep.get("Focus", 1)),
                         aec_field=str(ep.get("AECField", "010")),
                         aec_density=int(ep.get("AECDensity", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise DiosError(INTERNAL, f"catalog technique incomplete: {exc}") from None


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def build_context(records: ImageRecords, catalog: ViewCatalog, sop: str, *,
                  work_station_id: int = 1, images_dir: Path | None = None,
                  previews_dir: Path | None = None, with_technique: bool = True) -> ExposureContext:
    """The :class:`ExposureContext` of image ``sop`` (study service + catalog).

    With ``with_technique`` the view's APR technique for the study's patient size and
    ``work_station_id`` is looked up (an exposure); without, the context carries the
    default technique (an imported image).
    """
    ctx = records.image_context(sop)
    st, se, im, pt = ctx["study"], ctx["series"] or {}, ctx["image"], ctx["patient"]
    view_id = im.get("view_id", "")
    view_raw: dict[str, Any] = {}
    dp: dict[str, Any] = {}
    technique = Technique()
    if view_id:
        try:
            view_raw = dict(catalog.view_processing(view_id))
        except DiosError:
            view_raw = dict(ctx.get("view") or {})
        if with_technique:
            tech = catalog.tech_params(view_id, st.get("patient_size") or "Medium",
                                       work_station_id)
            dp = tech.get("dp", {})
            technique = technique_from_ep(tech["ep"])
    view = ViewSettings.from_catalog(view_raw, dp)
    patient = PatientInfo(
        patient_id=pt.get("patient_id") or "", patient_name=pt.get("patient_name") or "",
        patient_sex=pt.get("dicom_patient_sex") or "O", patient_dob=pt.get("patient_dob") or "",
        patient_age=pt.get("patient_age") or "", patient_type=pt.get("patient_type") or "Human",
        patient_size=pt.get("patient_size") or "", weight=_number(pt.get("weight")) or None,
        length=_number(pt.get("length")) or None, thickness=_number(pt.get("thickness")) or None,
        patient_english_name=pt.get("patient_english_name") or "",
        patient_former_name=pt.get("patient_former_name") or "",
        other_patient_names=pt.get("other_patient_names") or "",
        other_patient_ids=pt.get("other_patient_ids") or "",
        pregnancy_status=pt.get("pregnancy_status") or "",
        is_sedation=bool(pt.get("is_sedation")), is_anaesthesia=bool(pt.get("is_anaesthesia")),
        owner_name=pt.get("owner_name") or "", variety=pt.get("variety") or "",
        sex_neutered=pt.get("sex_neutered") or "", chip_number=pt.get("chip_number") or "")
    study_uid = st["study_instance_uid"]
    study = StudyInfo(
        study_instance_uid=study_uid, study_id=st["study_id"],
        accession_number=st.get("accession_number") or "",
        ref_physician=st.get("ref_physician") or "",
        study_description=st.get("study_description") or "",
        study_datetime=st.get("study_start_datetime") or datetime.now().isoformat(),
        operator_name=st.get("operator_name") or "")
    series = SeriesInfo(
        series_instance_uid=se.get("series_instance_uid", ""),
        series_number=int(se.get("sort") or 1),
        body_part=view.body_part or se.get("body_part") or "",
        view_position=view.view_position,
        protocol_name=se.get("performed_protocol_code_meaning") or view.description)
    image = ImageInfo(sop_instance_uid=sop, instance_number=int(im.get("sort") or 1),
                      image_laterality=view.laterality or "U")
    return ExposureContext(
        sop_instance_uid=sop, study_id=st["study_id"], product=st.get("product") or "",
        patient=patient, study=study, series=series, image=image,
        view=dataclasses.replace(view, view_id=view_id), technique=technique,
        dicom_path=images_dir / study_uid / f"{sop}.dcm" if images_dir else None,
        preview_path=previews_dir / f"{sop}.png" if previews_dir else None)
