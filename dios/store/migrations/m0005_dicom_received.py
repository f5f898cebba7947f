"""Instances other nodes stored on the console (moved priors): where each file is and the
attributes its queries match on."""

SQL = """
CREATE TABLE dicom_received (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL DEFAULT '',
    patient_name TEXT NOT NULL DEFAULT '',
    study_date TEXT NOT NULL DEFAULT '',
    modality TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    calling_ae TEXT NOT NULL DEFAULT '',
    received_at TEXT NOT NULL
);

CREATE INDEX dicom_received_study ON dicom_received (study_instance_uid);
"""
