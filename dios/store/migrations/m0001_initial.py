"""Users, studies, series and images."""

SQL = """
CREATE TABLE users (
    id {pk},
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    avatar TEXT NOT NULL DEFAULT '',
    must_change_password INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE studies (
    study_id TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL UNIQUE,
    public_study_id TEXT NOT NULL DEFAULT '',
    specific_character_set TEXT NOT NULL DEFAULT 'ISO_IR 192',
    accession_number TEXT NOT NULL DEFAULT '',
    ref_physician TEXT NOT NULL DEFAULT '',
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    patient_english_name TEXT NOT NULL DEFAULT '',
    patient_former_name TEXT NOT NULL DEFAULT '',
    patient_size TEXT NOT NULL,
    other_patient_ids TEXT NOT NULL DEFAULT '',
    other_patient_names TEXT NOT NULL DEFAULT '',
    patient_age TEXT NOT NULL DEFAULT '',
    patient_dob TEXT NOT NULL DEFAULT '',
    patient_sex TEXT NOT NULL DEFAULT '',
    patient_state TEXT NOT NULL DEFAULT '',
    admitting_time TEXT,
    priority TEXT NOT NULL DEFAULT '',
    reg_source TEXT NOT NULL DEFAULT '',
    study_description TEXT NOT NULL DEFAULT '',
    study_start_datetime TEXT NOT NULL,
    study_end_datetime TEXT,
    scheduled_procedure_step_start_date TEXT,
    performed_physician TEXT NOT NULL DEFAULT '',
    study_lock TEXT NOT NULL DEFAULT 'Unlocked',
    folder_path TEXT NOT NULL DEFAULT '',
    operator_name TEXT NOT NULL DEFAULT '',
    modality TEXT NOT NULL DEFAULT 'DX',
    weight INTEGER NOT NULL DEFAULT 0,
    thickness INTEGER NOT NULL DEFAULT 0,
    length INTEGER NOT NULL DEFAULT 0,
    patient_type TEXT NOT NULL,
    study_type TEXT NOT NULL DEFAULT 'Normal',
    owner_name TEXT NOT NULL DEFAULT '',
    chip_number TEXT NOT NULL DEFAULT '',
    variety TEXT NOT NULL DEFAULT '',
    is_anaesthesia INTEGER NOT NULL DEFAULT 0,
    is_sedation INTEGER NOT NULL DEFAULT 0,
    sex_neutered TEXT NOT NULL DEFAULT '',
    pregnancy_status TEXT NOT NULL DEFAULT '',
    mwl TEXT NOT NULL DEFAULT '',
    is_exported INTEGER NOT NULL DEFAULT 0,
    is_edited INTEGER NOT NULL DEFAULT 0,
    is_appended INTEGER NOT NULL DEFAULT 0,
    department TEXT NOT NULL DEFAULT '',
    mapped_status INTEGER NOT NULL DEFAULT 0,
    qc_result INTEGER NOT NULL DEFAULT 0,
    comment TEXT NOT NULL DEFAULT '',
    study_status TEXT NOT NULL DEFAULT 'Arrived',
    sort INTEGER NOT NULL DEFAULT 0,
    product TEXT NOT NULL DEFAULT 'DROS',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX studies_patient_id ON studies (patient_id);
CREATE INDEX studies_accession ON studies (accession_number);
CREATE INDEX studies_start ON studies (study_start_datetime);
CREATE INDEX studies_status ON studies (study_status);

CREATE TABLE series (
    series_instance_uid TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES studies (study_id) ON DELETE CASCADE,
    study_instance_uid TEXT NOT NULL,
    procedure_id TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '',
    performed_datetime TEXT,
    performed_protocol_code_meaning TEXT NOT NULL DEFAULT '',
    performed_protocol_code_value TEXT NOT NULL DEFAULT '',
    sort INTEGER NOT NULL DEFAULT 0,
    product TEXT NOT NULL DEFAULT 'DROS',
    is_pre_install INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);
CREATE INDEX series_study ON series (study_id);

CREATE TABLE images (
    sop_instance_id TEXT PRIMARY KEY,
    series_instance_uid TEXT NOT NULL REFERENCES series (series_instance_uid) ON DELETE CASCADE,
    study_instance_uid TEXT NOT NULL,
    study_id TEXT NOT NULL REFERENCES studies (study_id) ON DELETE CASCADE,
    secondary_sop_uid TEXT NOT NULL DEFAULT '',
    view_id TEXT NOT NULL,
    view_description TEXT NOT NULL DEFAULT '',
    image_status TEXT NOT NULL DEFAULT 'QUEUING',
    image_file_path TEXT NOT NULL DEFAULT '',
    preview_path TEXT NOT NULL DEFAULT '',
    acquisition_mode TEXT NOT NULL DEFAULT 'RAD',
    acquisition_context TEXT,
    img_proc_context TEXT,
    expose_status TEXT NOT NULL DEFAULT 'Unexposed',
    judged_status TEXT NOT NULL DEFAULT 'NotJudged',
    send_status TEXT NOT NULL DEFAULT 'Unsent',
    storage_status TEXT NOT NULL DEFAULT 'NotSaved',
    sort INTEGER NOT NULL DEFAULT 0,
    product TEXT NOT NULL DEFAULT 'DROS',
    is_pre_install INTEGER NOT NULL DEFAULT 1,
    ei DOUBLE PRECISION,
    di DOUBLE PRECISION,
    retake_of TEXT,
    exposed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX images_study ON images (study_id);
CREATE INDEX images_series ON images (series_instance_uid)
"""
