"""The study model: reply field lists (the seed's shapes), enumerations, transition table.

Reply shapes follow the reference console exactly, field for field and in its order:
``dr.study.Study`` (register, update, and, under ``dr.study.StudyReply``, get), its series
and images, and the image of ``dr.study.CreateImageReply`` (append, retake), which carries
``image_status`` instead of the four status fields.

Status fields move only along :data:`TRANSITIONS`; anything else is refused with
``INVALID_TRANSITION`` and leaves the record as it was:

==================  ===========================================================
field               allowed moves
==================  ===========================================================
``expose_status``   Unexposed -> Exposing -> Exposed; Exposing -> Unexposed (the
                    exposure failed or was aborted, or the server stopped during
                    it: the recovery at start); Unexposed -> Exposed (an image
                    imported from a file)
``storage_status``  NotSaved -> Saved
``judged_status``   NotJudged -> Accepted | Rejected; Accepted <-> Rejected
                    (only an exposed image is judged)
``send_status``     Unsent -> Sending -> Sent | SendFailed; SendFailed | Sent ->
                    Sending (retry, resend; only a saved image is sent)
``image_status``    QUEUING -> EXPOSING -> EXPOSED; EXPOSING -> QUEUING (failed,
                    aborted, recovered at start); QUEUING -> EXPOSED
``study_status``    Arrived -> InProgress -> Completed; Completed -> InProgress
                    (reopened: more views appended or exposed)
``study_lock``      Unlocked <-> Locked
==================  ===========================================================

:data:`RECOVERY` names the moves the study service makes at start for images a killed
server left half done (:meth:`dios.study.service.StudyService.recover`); each is one of
the moves above. ``storage_status`` needs none: an image becomes ``Saved`` together with
``Exposed``, in one transaction, after its file is on disk.
"""

from __future__ import annotations

from dios.codes import INVALID_TRANSITION, DiosError

#: ``dr.study.Study`` top-level fields, in the seed's order (``series`` follows).
STUDY_FIELDS: tuple[str, ...] = (
    "study_instance_uid", "study_id", "public_study_id", "specific_character_set",
    "accession_number", "ref_physician", "patient_id", "patient_name", "patient_english_name",
    "patient_former_name", "patient_size", "other_patient_ids", "other_patient_names",
    "patient_age", "patient_dob", "patient_sex", "patient_state", "admitting_time", "priority",
    "reg_source", "study_description", "study_start_datetime", "study_end_datetime",
    "scheduled_procedure_step_start_date", "performed_physician", "study_lock", "folder_path",
    "operator_name", "modality", "weight", "thickness", "length", "patient_type", "study_type",
    "owner_name", "chip_number", "variety", "is_anaesthesia", "is_sedation", "mwl",
    "is_exported", "is_edited", "is_appended", "department", "mapped_status", "qc_result",
    "comment", "study_status", "sort", "product",
)

#: Series fields in the seed's order (``images`` follows).
SERIES_FIELDS: tuple[str, ...] = (
    "series_instance_uid", "study_instance_uid", "study_id", "procedure_id", "body_part",
    "performed_datetime", "performed_protocol_code_meaning", "performed_protocol_code_value",
    "sort", "product", "is_pre_install",
)

#: Image fields of ``dr.study.Study`` in the seed's order.
IMAGE_FIELDS: tuple[str, ...] = (
    "sop_instance_id", "series_instance_uid", "study_instance_uid", "secondary_sop_uid",
    "study_id", "view_id", "view_description", "image_file_path", "acquisition_mode",
    "acquisition_context", "img_proc_context", "expose_status", "judged_status", "send_status",
    "storage_status", "sort", "product", "is_pre_install",
)

#: Image fields of ``dr.study.CreateImageReply`` in the seed's order.
CREATED_IMAGE_FIELDS: tuple[str, ...] = (
    "sop_instance_id", "series_instance_uid", "study_instance_uid", "secondary_sop_uid",
    "study_id", "view_id", "view_description", "image_status", "image_file_path",
    "acquisition_mode", "acquisition_context", "img_proc_context", "sort", "product",
    "is_pre_install",
)

STUDY_BOOL_FIELDS = frozenset({"is_anaesthesia", "is_sedation", "is_exported", "is_edited",
                               "is_appended", "mapped_status", "qc_result"})
JSON_IMAGE_FIELDS = frozenset({"acquisition_context", "img_proc_context"})

# -- enumerations (the values the seed shows, completed where it shows one) ---------------
SEXES = ("M", "F", "O", "U", "CM", "SF")
PATIENT_SIZES = ("Large", "Medium", "Small", "Paediatric")
STUDY_TYPES = ("Normal", "Emergency")
SEX_NEUTERED = ("ALTERED", "UNALTERED")
PREGNANCY_STATUSES = ("0001", "0002", "0003", "0004")
MODALITIES = ("DX", "CR")
STUDY_STATUSES = ("Arrived", "InProgress", "Completed")
STUDY_LOCKS = ("Unlocked", "Locked")
EXPOSE_STATUSES = ("Unexposed", "Exposing", "Exposed")
STORAGE_STATUSES = ("NotSaved", "Saved")
JUDGED_STATUSES = ("NotJudged", "Accepted", "Rejected")
SEND_STATUSES = ("Unsent", "Sending", "Sent", "SendFailed")
IMAGE_STATUSES = ("QUEUING", "EXPOSING", "EXPOSED")

TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    "expose_status": {"Unexposed": frozenset({"Exposing", "Exposed"}),
                      "Exposing": frozenset({"Exposed", "Unexposed"}),
                      "Exposed": frozenset()},
    "storage_status": {"NotSaved": frozenset({"Saved"}), "Saved": frozenset()},
    "judged_status": {"NotJudged": frozenset({"Accepted", "Rejected"}),
                      "Accepted": frozenset({"Rejected"}),
                      "Rejected": frozenset({"Accepted"})},
    "send_status": {"Unsent": frozenset({"Sending"}),
                    "Sending": frozenset({"Sent", "SendFailed"}),
                    "SendFailed": frozenset({"Sending"}),
                    "Sent": frozenset({"Sending"})},
    "image_status": {"QUEUING": frozenset({"EXPOSING", "EXPOSED"}),
                     "EXPOSING": frozenset({"EXPOSED", "QUEUING"}),
                     "EXPOSED": frozenset()},
    "study_status": {"Arrived": frozenset({"InProgress"}),
                     "InProgress": frozenset({"Completed"}),
                     "Completed": frozenset({"InProgress"})},
    "study_lock": {"Unlocked": frozenset({"Locked"}), "Locked": frozenset({"Unlocked"})},
}

#: Recovery at start: field -> (left by an interrupted exposure, back to).
RECOVERY: dict[str, tuple[str, str]] = {
    "expose_status": ("Exposing", "Unexposed"),
    "image_status": ("EXPOSING", "QUEUING"),
}

#: The value each status field starts with.
INITIAL: dict[str, str] = {
    "expose_status": "Unexposed", "storage_status": "NotSaved", "judged_status": "NotJudged",
    "send_status": "Unsent", "image_status": "QUEUING", "study_status": "Arrived",
    "study_lock": "Unlocked",
}


def can_move(field: str, old: str, new: str) -> bool:
    """True when ``field`` may go from ``old`` to ``new``."""
    return new in TRANSITIONS[field].get(old, frozenset())


def check_transition(field: str, old: str, new: str, what: str = "") -> None:
    """Raise ``INVALID_TRANSITION`` unless ``field`` may go from ``old`` to ``new``."""
    if not can_move(field, old, new):
        allowed = ", ".join(sorted(TRANSITIONS[field].get(old, ()))) or "none"
        raise DiosError(INVALID_TRANSITION,
                        f"{what + ': ' if what else ''}{field} {old} -> {new} not allowed "
                        f"(allowed from {old}: {allowed})", field=field, current=old, requested=new)
