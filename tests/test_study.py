"""The study service: the seed's reply shapes field by field, validation of every patient
field, the status transition table, locks, retake/append/delete, search and paging, and
no lost update or double exposure under concurrent writers (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta, timezone
from itertools import product as cartesian

import pytest

from dios.codes import (
    CATALOG_NOT_FOUND,
    CONFLICT,
    IMAGE_NOT_FOUND,
    INVALID_FIELD,
    INVALID_TRANSITION,
    MISSING_FIELD,
    STORAGE_ERROR,
    STUDY_LOCKED,
    STUDY_NOT_FOUND,
    DiosError,
)
from dios.store import open_database
from dios.study import StudyService
from dios.study.model import (
    CREATED_IMAGE_FIELDS,
    IMAGE_FIELDS,
    INITIAL,
    SERIES_FIELDS,
    STUDY_FIELDS,
    TRANSITIONS,
    can_move,
    check_transition,
)
from dios.uids import UidFactory, is_valid_uid
from tests.fixtures_postgres import _postgres_session, postgres_url  # noqa: F401
from tests.test_store import SeedCatalog

ROOT_UID = "1.2.826.0.1.3680043.10.1443"
CST = timezone(timedelta(hours=8))
START = datetime(2025, 6, 25, 6, 33, 39, 420606, tzinfo=UTC)

# The seed's example requests and replies (study, resource and auth sections).
SEED = json.loads(r"""
{"software_info":{"code":"0x000000","data":{"FPD":"Simulator","GEN":"Simulator"
,"guest":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3NTY3MjAxMTUsImlkIjoyLCJuYW1lIjoiZ3Vlc3QifQ.cDkkxM2mkiCQf7T87WsCMewITk13c7jSDoniT7gDHXQ"
,"language":["en","zh"],"product":"DROS","server":{"auth":{"build":"2025-08-25 17:45:18"
,"desc":"Authentication Server repo","submodule":["3a167dd4[rpc_idl]"]
,"version":"0.3.0-13-g8b85622"},"dcmtk":{"build":"2025-08-25 13:43:16"
,"desc":"Dcmtk Server repo","submodule":["0fc2b1e4[rpc_idl]"],"version":"0.3.0-12-gff618d4"}
,"imgProc":{"build":"2025-08-25 13:46:23","desc":"Img Proc Server repo"
,"submodule":["5e507af7[auto_wwwl]","3a75bb1f[collimator_circle]"
,"e7b69785[collimator_rect]","6b7fbbd1[enhance]","5905e001[rpc_idl]"]
,"version":"0.3.0-7-gbb2ee0b"},"protocol":{"build":"2025-08-25 17:45:23"
,"desc":"Protocol Server repo","submodule":["3a167dd4[rpc_idl]"]
,"version":"0.3.0-7-g1954756"},"resource":{"build":"2025-08-25 17:45:27"
,"desc":"Resource Server repo","submodule":["0fc2b1e4[rpc_idl]"]
,"version":"0.3.0-12-g60e37c1"},"study":{"build":"2025-08-25 17:45:25"
,"desc":"Study Server repo","submodule":["3a167dd4[rpc_idl]"],"version":"0.3.0-11-g784ba1b"}
,"task":{"build":"2025-08-25 17:45:29","desc":"Task Server repo"
,"submodule":["0fc2b1e4[rpc_idl]"],"version":"0.3.0-20-ge9ec04a"}}
,"sn":"2edbc382-044adc78-95bed11b-51c9328a"},"description":"Success","solution":""}
,"roles":{"code":"0x000000","data":["service","admin","mgr","tech"],"description":"Success"
,"solution":""},"login":{"code":"0x000000","description":"Success","solution":""
,"data":{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3NTEyNzc1ODgsImlkIjoxLCJuYW1lIjoiYWRtaW4ifQ.0qIzacOIf0-YluwAlrkaNJ9lf9w8IKneWEXh_mjUoN4"
,"expire":1751277588,"uid":1,"name":"admin","avatar":""}}
,"change_password":{"code":"0x000000","description":"Success","solution":"","data":{}}
,"options":{"code":"0x000000","description":"Success","solution":""
,"data":{"@type":"type.googleapis.com/dr.resource.OptionReply","option":[{"text":"Male"
,"value":"M"},{"text":"Female","value":"F"},{"text":"Other","value":"O"},{"text":"CM"
,"value":"CM"},{"text":"SF","value":"SF"}]}},"register":{"code":"0x000000"
,"description":"Success","solution":"","data":{"@type":"type.googleapis.com/dr.study.Study"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482097"
,"study_id":"20250625143339389","public_study_id":"","specific_character_set":"ISO_IR 192"
,"accession_number":"ACC0012345","ref_physician":"Dr. Smith (Vet)","patient_id":"PET007"
,"patient_name":"Buddy (Dog)","patient_english_name":"Buddy en"
,"patient_former_name":"Buddy f","patient_size":"Large","other_patient_ids":""
,"other_patient_names":"","patient_age":"5Y","patient_dob":"2025-06-10T03:12:36.181739Z"
,"patient_sex":"M","patient_state":"","admitting_time":null,"priority":"","reg_source":""
,"study_description":"","study_start_datetime":"2025-06-25T06:33:39.420606Z"
,"study_end_datetime":null,"scheduled_procedure_step_start_date":null
,"performed_physician":"","study_lock":"Unlocked","folder_path":"","operator_name":"OP987"
,"modality":"DX","weight":25,"thickness":15,"length":60,"patient_type":"Human"
,"study_type":"Normal","owner_name":"owner1","chip_number":"CHIP123456789"
,"variety":"Golden Retriever","is_anaesthesia":true,"is_sedation":true,"mwl":""
,"is_exported":false,"is_edited":false,"is_appended":false,"department":""
,"mapped_status":false,"qc_result":false
,"comment":"Patient presented with limping in right hind leg. Sedation administered."
,"study_status":"Arrived","sort":0,"product":"DROS"
,"series":[{"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482098"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482097"
,"study_id":"20250625143339389","procedure_id":"P0-0002","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":"颅骨前后位 + 侧位"
,"performed_protocol_code_value":"P0-0002","sort":1,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482099"
,"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482098"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482097"
,"secondary_sop_uid":"","study_id":"20250625143339389","view_id":"View_DX_T_A_SK_AP_00"
,"view_description":"颅骨前后位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":1
,"product":"DROS"
,"is_pre_install":true},{"sop_instance_id":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482100"
,"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482098"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482097"
,"secondary_sop_uid":"","study_id":"20250625143339389","view_id":"View_DX_T_A_SK_LAT_00"
,"view_description":"颅骨左侧位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":2
,"product":"DROS"
,"is_pre_install":true}]},{"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482101"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482097"
,"study_id":"20250625143339389","procedure_id":"","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":""
,"performed_protocol_code_value":"","sort":2,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482102"
,"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482101"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482097"
,"secondary_sop_uid":"","study_id":"20250625143339389","view_id":"View_DX_T_A_SK_Special_04"
,"view_description":"颅骨汤氏位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":3
,"product":"DROS","is_pre_install":true}]}]}},"update":{"code":"0x000000"
,"description":"Success","solution":"","data":{"@type":"type.googleapis.com/dr.study.Study"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482080"
,"study_id":"20250625140057649","public_study_id":"","specific_character_set":"ISO_IR 192"
,"accession_number":"ACC00123451","ref_physician":"Dr. Smith (Vet)1","patient_id":"PET0071"
,"patient_name":"Buddy (Dog)g","patient_english_name":"Buddy ee"
,"patient_former_name":"Buddy ff","patient_size":"Small","other_patient_ids":""
,"other_patient_names":"","patient_age":"4Y","patient_dob":"2025-06-11T03:12:36.181739Z"
,"patient_sex":"F","patient_state":"","admitting_time":null,"priority":"","reg_source":""
,"study_description":"","study_start_datetime":"2025-06-25T06:00:57.401703Z"
,"study_end_datetime":null,"scheduled_procedure_step_start_date":null
,"performed_physician":"","study_lock":"Unlocked","folder_path":"","operator_name":"OP9871"
,"modality":"DX","weight":35,"thickness":25,"length":70,"patient_type":"Human"
,"study_type":"Normal","owner_name":"owner11","chip_number":"CHIP1234567891"
,"variety":"Golden Retriever1","is_anaesthesia":false,"is_sedation":false,"mwl":""
,"is_exported":false,"is_edited":false,"is_appended":false,"department":""
,"mapped_status":false,"qc_result":false
,"comment":"1Patient presented with limping in right hind leg. Sedation administered."
,"study_status":"Arrived","sort":0,"product":"DROS"
,"series":[{"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482081"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482080"
,"study_id":"20250625140057649","procedure_id":"P0-0002","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":"颅骨前后位 + 侧位"
,"performed_protocol_code_value":"P0-0002","sort":1,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482082"
,"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482081"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482080"
,"secondary_sop_uid":"","study_id":"20250625140057649","view_id":"View_DX_T_A_SK_AP_00"
,"view_description":"颅骨前后位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":1
,"product":"DROS"
,"is_pre_install":true},{"sop_instance_id":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482083"
,"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482081"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482080"
,"secondary_sop_uid":"","study_id":"20250625140057649","view_id":"View_DX_T_A_SK_LAT_00"
,"view_description":"颅骨左侧位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":2
,"product":"DROS"
,"is_pre_install":true}]},{"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482084"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482080"
,"study_id":"20250625140057649","procedure_id":"","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":""
,"performed_protocol_code_value":"","sort":2,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482085"
,"series_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482084"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.33458.1750831257.482080"
,"secondary_sop_uid":"","study_id":"20250625140057649","view_id":"View_DX_T_A_SK_Special_04"
,"view_description":"颅骨汤氏位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":3
,"product":"DROS","is_pre_install":true}]}]}},"get":{"code":"0x000000"
,"description":"Success","solution":""
,"data":{"@type":"type.googleapis.com/dr.study.StudyReply"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.34708.1750322497.870195"
,"study_id":"20250619164137632","public_study_id":"","specific_character_set":"ISO_IR 192"
,"accession_number":"ACC0012346","ref_physician":"Dr. Smith (Vet)","patient_id":"PET007"
,"patient_name":"Tom","patient_size":"Large","other_patient_ids":"","other_patient_names":""
,"owner_name":"","patient_age":"5Y","patient_dob":"2025-06-10T03:12:36.181739Z"
,"patient_sex":"M","patient_state":"","admitting_time":null,"priority":"","reg_source":""
,"study_description":"","study_start_datetime":"2025-06-19T08:41:37.894Z"
,"study_end_datetime":null,"scheduled_procedure_step_start_date":null
,"performed_physician":"","study_lock":"Unlocked","folder_path":"","operator_name":""
,"modality":"DX","weight":25,"thickness":15,"length":60,"patient_type":"Human"
,"study_type":"Normal","mwl":"","is_exported":false,"is_edited":false,"is_appended":false
,"department":"","mapped_status":false,"qc_result":false
,"comment":"Patient presented with limping in right hind leg. Sedation administered."
,"study_status":"Completed","sort":0,"product":"DROS"
,"series":[{"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.34708.1750322497.870196"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.34708.1750322497.870195"
,"study_id":"20250619164137632","procedure_id":"P0-0002","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":"颅骨前后位 + 侧位"
,"performed_protocol_code_value":"P0-0002","sort":1,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.4.701601461.34708.1750322497.870197"
,"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.34708.1750322497.870196"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.34708.1750322497.870195"
,"secondary_sop_uid":"","study_id":"20250619164137632","view_id":"View_DX_T_A_SK_AP_00"
,"view_description":"颅骨前后位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":1
,"product":"DROS"
,"is_pre_install":true},{"sop_instance_id":"1.2.276.0.1000000.5.1.4.701601461.34708.1750322497.870198"
,"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.34708.1750322497.870196"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.34708.1750322497.870195"
,"secondary_sop_uid":"","study_id":"20250619164137632","view_id":"View_DX_T_A_SK_LAT_00"
,"view_description":"颅骨左侧位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":2
,"product":"DROS"
,"is_pre_install":true}]},{"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.34708.1750322497.870199"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.34708.1750322497.870195"
,"study_id":"20250619164137632","procedure_id":"","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":""
,"performed_protocol_code_value":"","sort":2,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.4.701601461.34708.1750322497.870200"
,"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.34708.1750322497.870199"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.34708.1750322497.870195"
,"secondary_sop_uid":"","study_id":"20250619164137632","view_id":"View_DX_T_A_SK_Special_04"
,"view_description":"颅骨汤氏位","image_file_path":"","acquisition_mode":"RAD"
,"acquisition_context":null,"img_proc_context":null,"expose_status":"Unexposed"
,"judged_status":"NotJudged","send_status":"Unsent","storage_status":"NotSaved","sort":3
,"product":"DROS","is_pre_install":true}]}]}},"stat":{"code":"0x000000"
,"description":"Success","solution":"","data":{"@type":"type.googleapis.com/dr.study.Stat"
,"total":3,"exposed":1}},"append":{"code":"0x000000","description":"Success","solution":""
,"data":{"@type":"type.googleapis.com/dr.study.CreateImageReply"
,"series":[{"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.11229.1750069146.245933"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.19649.1749545373.668668"
,"study_id":"20250610164933314","procedure_id":"P0-0002","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":"颅骨前后位 + 侧位"
,"performed_protocol_code_value":"P0-0002","sort":5,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.4.701601461.11229.1750069146.245934"
,"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.11229.1750069146.245933"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.19649.1749545373.668668"
,"secondary_sop_uid":"","study_id":"20250610164933314","view_id":"View_DX_T_A_SK_AP_00"
,"view_description":"颅骨前后位","image_status":"QUEUING","image_file_path":""
,"acquisition_mode":"RAD","acquisition_context":null,"img_proc_context":null,"sort":8
,"product":"DROS"
,"is_pre_install":true}]},{"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.11229.1750069146.245935"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.19649.1749545373.668668"
,"study_id":"20250610164933314","procedure_id":"","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":""
,"performed_protocol_code_value":"","sort":6,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.4.701601461.11229.1750069146.245936"
,"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.11229.1750069146.245935"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.19649.1749545373.668668"
,"secondary_sop_uid":"","study_id":"20250610164933314","view_id":"View_DX_T_A_SK_Special_05"
,"view_description":"颅骨斯氏位","image_status":"QUEUING","image_file_path":""
,"acquisition_mode":"RAD","acquisition_context":null,"img_proc_context":null,"sort":9
,"product":"DROS","is_pre_install":true}]}]}},"retake":{"code":"0x000000"
,"description":"Success","solution":""
,"data":{"@type":"type.googleapis.com/dr.study.CreateImageReply"
,"series":[{"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.19649.1749545373.668669"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.19649.1749545373.668668"
,"study_id":"20250610164933314","procedure_id":"P0-0002","body_part":"Human_SKULL"
,"performed_datetime":null,"performed_protocol_code_meaning":"颅骨前后位 + 侧位"
,"performed_protocol_code_value":"P0-0002","sort":1,"product":"DROS","is_pre_install":true
,"images":[{"sop_instance_id":"1.2.276.0.1000000.5.1.4.701601461.11229.1750068918.245928"
,"series_instance_uid":"1.2.276.0.1000000.5.1.3.701601461.19649.1749545373.668669"
,"study_instance_uid":"1.2.276.0.1000000.5.1.2.701601461.19649.1749545373.668668"
,"secondary_sop_uid":"","study_id":"20250610164933314","view_id":"View_DX_T_A_SK_LAT_00"
,"view_description":"颅骨左侧位","image_status":"QUEUING","image_file_path":""
,"acquisition_mode":"RAD","acquisition_context":null,"img_proc_context":null,"sort":3
,"product":"DROS","is_pre_install":true}]}]}},"empty":{"code":"0x000000"
,"description":"Success","solution":""
,"data":{"@type":"type.googleapis.com/google.protobuf.Empty","value":{}}}}
""".replace("\n", ""))


def seed_register_request(**over) -> dict:
    req = {
        "accession_number": "ACC0012345", "patient_id": "PET007", "patient_name": "Buddy (Dog)",
        "patient_english_name": "Buddy en", "patient_former_name": "Buddy f",
        "patient_size": "Large", "patient_age": "5Y", "patient_dob": "2025-06-10T03:12:36.181739Z",
        "patient_sex": "M", "owner_name": "owner1", "chip_number": "CHIP123456789",
        "variety": "Golden Retriever", "is_anaesthesia": True, "is_sedation": True,
        "patient_type": "Human", "ref_physician": "Dr. Smith (Vet)", "operator_id": "OP987",
        "modality": "DX", "weight": 25, "thickness": 15, "length": 60, "study_type": "Normal",
        "comment": "Patient presented with limping in right hind leg. Sedation administered.",
        "views": [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002"},
                  {"view_id": "View_DX_T_A_SK_LAT_00", "procedure_id": "P0-0002"},
                  {"view_id": "View_DX_T_A_SK_Special_04", "procedure_id": ""}],
    }
    req.update(over)
    return req


class Clock:
    def __init__(self, t: datetime = START) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def clock():
    return Clock()


def _service(url, tmp_path, clock, catalog=None) -> StudyService:
    db = open_database(url)
    return StudyService(db, catalog or SeedCatalog(), UidFactory(ROOT_UID), data_dir=tmp_path,
                        clock=clock, tz=CST)


@pytest.fixture
def svc(tmp_path, clock):
    s = _service(f"sqlite:///{tmp_path / 'dios.db'}", tmp_path, clock)
    yield s
    s.db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_svc(request, tmp_path, clock):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dios.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = _service(url, tmp_path, clock)
    yield s
    s.db.close()


def _err(fn, *a, **kw) -> DiosError:
    with pytest.raises(DiosError) as e:
        fn(*a, **kw)
    return e.value


def _images(study: dict) -> list[dict]:
    return [im for se in study["series"] for im in se["images"]]


def _snapshot(svc: StudyService) -> list:
    """Everything stored, for 'state unchanged' checks."""
    out = []
    for table, key in (("studies", "study_id"), ("series", "series_instance_uid"),
                       ("images", "sop_instance_id")):
        out.append(svc.db.query(f"SELECT * FROM {table} ORDER BY {key}"))
    return out


def _files(tmp_path, sop: str) -> tuple[str, str]:
    d = tmp_path / "images"
    d.mkdir(exist_ok=True)
    f = d / f"{sop}.dcm"
    p = d / f"{sop}.png"
    f.write_bytes(b"DICM")
    p.write_bytes(b"\x89PNG")
    return str(f), str(p)


def _expose(svc, tmp_path, sop: str) -> dict:
    svc.mark_exposing(sop)
    f, p = _files(tmp_path, sop)
    return svc.mark_exposed(sop, {"kV": 70, "mAs": 12.5}, f, p, ei=250.0, di=0.1)


def _same_shape(ours: dict, seed: dict, where: str = "") -> None:
    """Same keys in the same order, recursively through series and images."""
    assert list(ours) == list(seed), where
    for k in ("series", "images"):
        if k in seed and seed[k]:
            assert ours[k], f"{where}.{k} empty"
            for i, item in enumerate(ours[k]):
                _same_shape(item, seed[k][0], f"{where}.{k}[{i}]")


# -- shapes against the seed's example replies ------------------------------------------------
def test_register_reply_is_the_seeds_study(svc):
    seed = SEED["register"]["data"]
    got = svc.register(seed_register_request(), language="zh")
    _same_shape(got, seed, "study")
    generated = {"study_instance_uid", "study_id", "study_start_datetime"}
    for k, v in seed.items():
        if k not in generated and k != "series":
            assert got[k] == v, k
    assert got["study_id"] == "20250625143339420"  # site time (UTC+8), milliseconds
    assert got["study_start_datetime"] == "2025-06-25T06:33:39.420606Z"
    study_uid = got["study_instance_uid"]
    uids = {study_uid}
    for se, seed_se in zip(got["series"], seed["series"], strict=True):
        for k, v in seed_se.items():
            if k not in ("series_instance_uid", "study_instance_uid", "study_id", "images"):
                assert se[k] == v, k
        assert se["study_instance_uid"] == study_uid and se["study_id"] == got["study_id"]
        uids.add(se["series_instance_uid"])
        for im, seed_im in zip(se["images"], seed_se["images"], strict=True):
            for k, v in seed_im.items():
                if k not in ("sop_instance_id", "series_instance_uid", "study_instance_uid",
                             "study_id"):
                    assert im[k] == v, k
            assert im["series_instance_uid"] == se["series_instance_uid"]
            assert im["study_instance_uid"] == study_uid
            uids.add(im["sop_instance_id"])
    assert len(uids) == 1 + 2 + 3
    assert all(is_valid_uid(u) and u.startswith(ROOT_UID + ".") for u in uids)


def test_register_in_english_takes_english_names(svc):
    got = svc.register(seed_register_request(), language="en")
    assert got["series"][0]["performed_protocol_code_meaning"] == "Skull AP + LAT"
    assert [im["view_description"] for im in _images(got)] == [
        "Skull AP", "Skull LAT,left", "Skull Townes View"]


def test_get_is_a_study_reply_with_every_seed_field(svc):
    sid = svc.register(seed_register_request())["study_id"]
    got = svc.get(sid)
    seed = SEED["get"]["data"]
    assert got["@type"] == seed["@type"]
    assert set(seed) <= set(got)
    assert list(got)[1:] == list(SEED["register"]["data"])[1:]
    for se in got["series"]:
        assert list(se) == list(seed["series"][0])
        for im in se["images"]:
            assert list(im) == list(seed["series"][0]["images"][0])


def test_update_reply_is_the_seeds_study(svc):
    sid = svc.register(seed_register_request())["study_id"]
    seed = SEED["update"]["data"]
    req = {k: seed[k] for k in (
        "accession_number", "patient_id", "patient_name", "patient_english_name",
        "patient_former_name", "patient_size", "patient_age", "patient_dob", "patient_sex",
        "owner_name", "chip_number", "variety", "is_anaesthesia", "is_sedation",
        "ref_physician", "weight", "thickness", "length", "comment")}
    req["operator_id"] = seed["operator_name"]
    got = svc.update(sid, req)
    _same_shape(got, seed, "study")
    for k in req:
        if k != "operator_id":
            assert got[k] == seed[k], k
    assert got["operator_name"] == "OP9871"
    assert got["is_edited"] is False and got["study_status"] == "Arrived"
    assert svc.get(sid)["patient_name"] == "Buddy (Dog)g"


def test_stat_shape_and_counts(svc, tmp_path):
    study = svc.register(seed_register_request())
    _expose(svc, tmp_path, _images(study)[0]["sop_instance_id"])
    got = svc.stat(study["study_id"])
    assert list(got) == list(SEED["stat"]["data"])
    assert got == {"@type": "type.googleapis.com/dr.study.Stat", "total": 3, "exposed": 1}
    svc.register(seed_register_request())
    assert svc.stat() == {"@type": "type.googleapis.com/dr.study.Stat", "total": 2, "exposed": 1}
    assert _err(svc.stat, "nope").code is STUDY_NOT_FOUND


def test_append_reply_is_the_seeds_create_image_reply(svc):
    study = svc.register(seed_register_request())
    seed = SEED["append"]["data"]
    got = svc.append_images(study["study_id"], [
        {"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002"},
        {"view_id": "View_DX_T_A_SK_Special_05", "procedure_id": ""}], language="zh")
    _same_shape(got, seed, "reply")
    assert [se["sort"] for se in got["series"]] == [3, 4]
    assert [im["sort"] for im in _images(got)] == [4, 5]
    for se, seed_se in zip(got["series"], seed["series"], strict=True):
        for k in ("procedure_id", "body_part", "performed_datetime",
                  "performed_protocol_code_meaning", "performed_protocol_code_value",
                  "product", "is_pre_install"):
            assert se[k] == seed_se[k], k
        for im, seed_im in zip(se["images"], seed_se["images"], strict=True):
            for k in ("view_id", "view_description", "image_status", "image_file_path",
                      "acquisition_mode", "acquisition_context", "img_proc_context", "product",
                      "is_pre_install", "secondary_sop_uid"):
                assert im[k] == seed_im[k], k
    after = svc.get(study["study_id"])
    assert after["is_appended"] is True and len(after["series"]) == 4 and len(_images(after)) == 5


def test_retake_reply_is_the_seeds_create_image_reply(svc, tmp_path):
    study = svc.register(seed_register_request(), language="zh")
    lat = _images(study)[1]
    assert _err(svc.retake, lat["sop_instance_id"]).code is INVALID_TRANSITION
    _expose(svc, tmp_path, lat["sop_instance_id"])
    seed = SEED["retake"]["data"]
    got = svc.retake(lat["sop_instance_id"])
    _same_shape(got, seed, "reply")
    se = got["series"][0]
    new = se["images"][0]
    assert se["series_instance_uid"] == lat["series_instance_uid"]
    assert (new["view_id"], new["view_description"], new["image_status"], new["sort"]) == (
        "View_DX_T_A_SK_LAT_00", "颅骨左侧位", "QUEUING", 4)
    assert new["sop_instance_id"] != lat["sop_instance_id"]
    old = svc.image(lat["sop_instance_id"])
    assert old["judged_status"] == "Rejected" and old["expose_status"] == "Exposed"
    assert len(_images(svc.get(study["study_id"]))) == 4


def test_empty_replies_are_the_seeds(svc, tmp_path):
    study = svc.register(seed_register_request())
    sop = _images(study)[0]["sop_instance_id"]
    _expose(svc, tmp_path, sop)
    empty = SEED["empty"]["data"]
    assert svc.judge(sop, True) == empty
    assert svc.set_study_status(study["study_id"], "Completed") == empty
    assert svc.set_lock(study["study_id"], "Locked") == empty
    assert svc.set_lock(study["study_id"], False) == empty
    assert svc.delete_images(study["study_id"], [_images(study)[2]["sop_instance_id"]]) == empty


# -- validation of every patient field ------------------------------------------------------------
BAD_VALUES = {
    "accession_number": ["A" * 17, 123, "a\x00b", "a\\b", "a\nb"],
    "patient_id": ["P" * 65, [], "x\ny"],
    "patient_name": ["N" * 65, {"a": 1}],
    "patient_english_name": ["E" * 65, 5],
    "patient_former_name": ["F" * 65, False],
    "patient_size": ["Huge", "large", 1],
    "patient_age": ["5", "5years", "1234Y", 5, "Y", "-5Y"],
    "patient_dob": ["2025-13-01", "yesterday", "2999-01-01", 20200101, "1700-01-01",
                    "2025-06-10T25:00:00Z", "10/06/2025"],
    "patient_sex": ["X", "male", 1, "m"],
    "sex_neutered": ["YES", True, "altered"],
    "pregnancy_status": ["5", "0005", 1],
    "owner_name": ["O" * 65, 1],
    "chip_number": ["C" * 65, 123456789],
    "variety": ["V" * 65, ["Golden"]],
    "is_anaesthesia": ["maybe", 1, "yes"],
    "is_sedation": ["no", 0, []],
    "patient_type": ["T" * 65, 1],
    "ref_physician": ["R" * 65, 2],
    "operator_id": ["O" * 65, 3],
    "modality": ["CT", "dx", 1],
    "weight": [-1, 10001, "abc", 2.5, True],
    "thickness": [-5, "1.5", False],
    "length": [10**9, "x", "1e3"],
    "study_type": ["Urgent", "normal", 0],
    "comment": ["c" * 10241, "a\x01b", 5],
}
REQUIRED_ON_REGISTER = ["accession_number", "patient_id", "patient_name", "patient_size",
                        "patient_age", "patient_dob", "patient_type", "modality", "study_type",
                        "views"]


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in BAD_VALUES.items() for v in vs])
def test_register_rejects_bad_field(svc, field, value):
    err = _err(svc.register, seed_register_request(**{field: value}))
    assert err.code is INVALID_FIELD and err.data["field"] == field
    assert field in err.detail
    assert svc.stat()["total"] == 0


@pytest.mark.parametrize("field", REQUIRED_ON_REGISTER)
@pytest.mark.parametrize("how", ["absent", "none", "empty"])
def test_register_requires_field(svc, field, how):
    req = seed_register_request()
    if how == "absent":
        del req[field]
    else:
        req[field] = None if how == "none" else ("" if field != "views" else [])
    err = _err(svc.register, req)
    assert err.code is MISSING_FIELD and err.data["field"] == field
    assert svc.stat()["total"] == 0


@pytest.mark.parametrize("views,code,field", [
    ("x", INVALID_FIELD, "views"),
    ([5], INVALID_FIELD, "views[0]"),
    ([{"procedure_id": "P0-0002"}], MISSING_FIELD, "views[0].view_id"),
    ([{"view_id": ""}], MISSING_FIELD, "views[0].view_id"),
    ([{"view_id": 5}], INVALID_FIELD, "views[0].view_id"),
    ([{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": 7}], INVALID_FIELD,
     "views[0].procedure_id"),
    ([{"view_id": "View_DX_T_A_SK_AP_00"}] * 101, INVALID_FIELD, "views"),
    ([{"view_id": "View_DX_T_A_SK_AP_00"}, {"view_id": "No_Such_View"}], CATALOG_NOT_FOUND,
     "views[1].view_id"),
    ([{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P9-9999"}], CATALOG_NOT_FOUND,
     "views[0].procedure_id"),
    ([{"view_id": "View_DX_T_A_SK_Special_04", "procedure_id": "P0-0002"}], INVALID_FIELD,
     "views[0].view_id"),  # not a view of that procedure
])
def test_register_rejects_bad_views(svc, views, code, field):
    err = _err(svc.register, seed_register_request(views=views))
    assert err.code is code and err.data["field"] == field
    assert svc.stat()["total"] == 0


def test_register_rejects_disabled_view(svc):
    svc.catalog.disabled.add("View_DX_T_A_SK_LAT_00")
    err = _err(svc.register, seed_register_request())
    assert err.code is INVALID_FIELD and "disabled" in err.detail
    assert svc.stat()["total"] == 0


def test_register_accepts_every_valid_form(svc):
    for sex in ("M", "F", "O", "U", "CM", "SF", ""):
        got = svc.register(seed_register_request(patient_sex=sex))
        assert got["patient_sex"] == sex
    got = svc.register(seed_register_request(
        is_anaesthesia="true", is_sedation="false", weight="42", thickness=12.0,
        patient_dob="2020-01-02", patient_age="012M", sex_neutered="ALTERED",
        pregnancy_status="0004", patient_size="Paediatric", study_type="Emergency",
        modality="CR", comment="line one\nline two\ttab", extra_unknown_field="ignored"))
    assert (got["is_anaesthesia"], got["is_sedation"], got["weight"], got["thickness"]) == (
        True, False, 42, 12)
    assert (got["patient_dob"], got["patient_age"], got["patient_size"], got["study_type"],
            got["modality"], got["comment"]) == (
        "2020-01-02", "012M", "Paediatric", "Emergency", "CR", "line one\nline two\ttab")
    assert "extra_unknown_field" not in got and "sex_neutered" not in got
    ctx = svc.image_context(_images(got)[0]["sop_instance_id"])
    assert ctx["patient"]["sex_neutered"] == "ALTERED"
    assert ctx["patient"]["pregnancy_status"] == "0004"
    minimal = {k: v for k, v in seed_register_request().items()
               if k in REQUIRED_ON_REGISTER}
    got = svc.register(minimal, source="Android", user="tom")
    assert (got["patient_sex"], got["owner_name"], got["weight"], got["is_sedation"],
            got["reg_source"], got["operator_name"]) == ("", "", 0, False, "Android", "tom")


def test_register_bad_request_types(svc):
    assert _err(svc.register, ["not", "an", "object"]).code is INVALID_FIELD
    assert _err(svc.register, seed_register_request(), product="CTOS").code is INVALID_FIELD


# -- update ----------------------------------------------------------------------------------
UPDATE_REQUIRED = ["accession_number", "patient_id", "patient_name", "patient_size",
                   "patient_age", "patient_dob", "patient_sex"]


def _update_request(**over) -> dict:
    req = {k: v for k, v in seed_register_request().items() if k in UPDATE_REQUIRED}
    req.update(over)
    return req


@pytest.mark.parametrize("field", UPDATE_REQUIRED)
def test_update_requires_field_and_changes_nothing(svc, field):
    sid = svc.register(seed_register_request())["study_id"]
    before = _snapshot(svc)
    req = _update_request(patient_name="Changed")
    del req[field]
    err = _err(svc.update, sid, req)
    assert err.code is MISSING_FIELD and err.data["field"] == field
    assert _snapshot(svc) == before


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in BAD_VALUES.items() for v in vs[:2]
                                         if f not in ("patient_type", "modality", "study_type")])
def test_update_rejects_bad_field_and_changes_nothing(svc, field, value):
    sid = svc.register(seed_register_request())["study_id"]
    before = _snapshot(svc)
    err = _err(svc.update, sid, _update_request(**{field: value}))
    assert err.code is INVALID_FIELD and err.data["field"] == field
    assert _snapshot(svc) == before


def test_update_keeps_absent_optional_fields_and_ignores_register_only(svc):
    sid = svc.register(seed_register_request())["study_id"]
    got = svc.update(sid, _update_request(patient_name="New Name", modality="CR",
                                          study_type="Emergency", patient_type="Dog"))
    assert got["patient_name"] == "New Name"
    assert (got["owner_name"], got["weight"], got["modality"], got["study_type"],
            got["patient_type"]) == ("owner1", 25, "DX", "Normal", "Human")


def test_update_errors(svc):
    sid = svc.register(seed_register_request())["study_id"]
    assert _err(svc.update, "19990101000000000", _update_request()).code is STUDY_NOT_FOUND
    assert _err(svc.update, "", _update_request()).code is MISSING_FIELD
    assert _err(svc.update, 5, _update_request()).code is INVALID_FIELD
    v = svc.study_version(sid)
    svc.update(sid, _update_request(patient_name="A"), expected_version=v)
    before = _snapshot(svc)
    err = _err(svc.update, sid, _update_request(patient_name="B"), expected_version=v)
    assert err.code is CONFLICT and err.data["version"] == v + 1
    assert _err(svc.update, sid, _update_request(), expected_version="1").code is INVALID_FIELD
    assert _snapshot(svc) == before
    svc.update(sid, {**_update_request(patient_name="C"), "expected_version": v + 1})
    assert svc.get(sid)["patient_name"] == "C"


# -- transition table ------------------------------------------------------------------------
def test_transition_table_every_pair():
    for field, table in TRANSITIONS.items():
        states = set(table) | {s for targets in table.values() for s in targets}
        assert INITIAL[field] in table
        for old, new in cartesian(sorted(states), repeat=2):
            expected = new in table.get(old, ())
            assert can_move(field, old, new) is expected, (field, old, new)
            if expected:
                check_transition(field, old, new)
            else:
                with pytest.raises(DiosError) as e:
                    check_transition(field, old, new)
                assert e.value.code is INVALID_TRANSITION
                assert e.value.data == {"field": field, "current": old, "requested": new}
        with pytest.raises(DiosError):
            check_transition(field, "NoSuchState", INITIAL[field])


def test_expose_lifecycle(svc, tmp_path):
    study = svc.register(seed_register_request())
    sop = _images(study)[0]["sop_instance_id"]
    got = svc.mark_exposing(sop)
    assert (got["expose_status"], got["storage_status"]) == ("Exposing", "NotSaved")
    assert svc.get(study["study_id"])["study_status"] == "InProgress"
    assert _err(svc.mark_exposing, sop).code is INVALID_TRANSITION
    got = svc.mark_expose_failed(sop, "aborted")
    assert got["expose_status"] == "Unexposed"
    assert svc.image_context(sop)["image"]["image_status"] == "QUEUING"
    assert _err(svc.mark_expose_failed, sop).code is INVALID_TRANSITION
    svc.mark_exposing(sop)
    f, p = _files(tmp_path, sop)
    got = svc.mark_exposed(sop, {"kV": 70, "mAs": 12.5}, f, p, ei=250.0, di=0.1,
                           img_proc={"profile": "skull"})
    assert list(got) == list(IMAGE_FIELDS)
    assert (got["expose_status"], got["storage_status"], got["judged_status"],
            got["send_status"], got["image_file_path"]) == ("Exposed", "Saved", "NotJudged",
                                                            "Unsent", f)
    assert got["acquisition_context"] == {"kV": 70, "mAs": 12.5}
    assert got["img_proc_context"] == {"profile": "skull"}
    ctx = svc.image_context(sop)
    assert ctx["image"]["image_status"] == "EXPOSED" and ctx["image"]["preview_path"] == p
    assert (ctx["image"]["ei"], ctx["image"]["di"]) == (250.0, 0.1)
    assert ctx["series"]["performed_datetime"] == "2025-06-25T06:33:39.420606Z"
    before = _snapshot(svc)
    assert _err(svc.mark_exposed, sop, {}, f, p).code is INVALID_TRANSITION  # lands once
    assert _err(svc.mark_exposing, sop).code is INVALID_TRANSITION
    assert _err(svc.mark_expose_failed, sop).code is INVALID_TRANSITION
    assert _snapshot(svc) == before


def test_mark_exposed_input_checks_change_nothing(svc, tmp_path):
    study = svc.register(seed_register_request())
    sop = _images(study)[0]["sop_instance_id"]
    svc.mark_exposing(sop)
    f, p = _files(tmp_path, sop)
    before = _snapshot(svc)
    assert _err(svc.mark_exposed, sop, {}, str(tmp_path / "missing.dcm")).code is STORAGE_ERROR
    assert _err(svc.mark_exposed, sop, {}, f, str(tmp_path / "none.png")).code is STORAGE_ERROR
    assert _err(svc.mark_exposed, sop, {}, "").code is INVALID_FIELD
    assert _err(svc.mark_exposed, sop, {}, f, p, ei=float("nan")).code is INVALID_FIELD
    assert _err(svc.mark_exposed, sop, {}, f, p, di="high").code is INVALID_FIELD
    assert _err(svc.mark_exposed, sop, {"x": object()}, f, p).code is INVALID_FIELD
    assert _err(svc.mark_exposed, "1.2.3", {}, f, p).code is IMAGE_NOT_FOUND
    assert _snapshot(svc) == before


def test_import_path_and_relative_file(svc, tmp_path):
    """An uploaded file: Unexposed -> Exposed directly, path relative to the data dir."""
    study = svc.register(seed_register_request())
    sop = _images(study)[2]["sop_instance_id"]
    _files(tmp_path, sop)
    got = svc.mark_imported(sop, f"images/{sop}.dcm", secondary_sop_uid="1.2.3.4",
                            img_proc={"source": "png-upload"})
    assert got["image_file_path"] == f"images/{sop}.dcm" and got["secondary_sop_uid"] == "1.2.3.4"
    assert got["img_proc_context"] == {"source": "png-upload"} and got["expose_status"] == "Exposed"
    assert svc.get(study["study_id"])["study_status"] == "InProgress"


def test_judge(svc, tmp_path):
    study = svc.register(seed_register_request())
    sop = _images(study)[0]["sop_instance_id"]
    assert _err(svc.judge, sop, True).code is INVALID_TRANSITION
    _expose(svc, tmp_path, sop)
    for accept, status in ((True, "Accepted"), (True, "Accepted"), (False, "Rejected"),
                           ("true", "Accepted")):
        svc.judge(sop, accept)
        assert svc.image(sop)["judged_status"] == status
    for bad in ("maybe", 1, None):
        assert _err(svc.judge, sop, bad).code in (INVALID_FIELD, MISSING_FIELD)
    assert _err(svc.judge, "9.9.9", True).code is IMAGE_NOT_FOUND
    assert _err(svc.judge, "", True).code is MISSING_FIELD


def test_send_status(svc, tmp_path):
    study = svc.register(seed_register_request())
    sop = _images(study)[0]["sop_instance_id"]
    assert _err(svc.set_send_status, sop, "Sending").code is INVALID_TRANSITION
    _expose(svc, tmp_path, sop)
    assert _err(svc.set_send_status, sop, "Sent").code is INVALID_TRANSITION
    for s in ("Sending", "SendFailed", "Sending", "Sent", "Sending", "Sent"):
        assert svc.set_send_status(sop, s)["send_status"] == s
    assert _err(svc.set_send_status, sop, "Unsent").code is INVALID_TRANSITION
    assert _err(svc.set_send_status, sop, "Bogus").code is INVALID_TRANSITION


def test_study_status_transitions(svc):
    sid = svc.register(seed_register_request())["study_id"]
    assert _err(svc.set_study_status, sid, "Completed").code is INVALID_TRANSITION
    assert _err(svc.set_study_status, sid, "Arrived").code is INVALID_FIELD
    assert _err(svc.set_study_status, sid, "Done").code is INVALID_FIELD
    assert _err(svc.set_study_status, sid, None).code is MISSING_FIELD
    assert _err(svc.set_study_status, "nope", "InProgress").code is STUDY_NOT_FOUND
    svc.set_study_status(sid, "InProgress")
    svc.set_status(sid, "InProgress")  # a repeat is a no-op
    svc.set_study_status(sid, "Completed")
    s = svc.get(sid)
    assert s["study_status"] == "Completed" and s["study_end_datetime"] is not None
    svc.set_study_status(sid, "InProgress")
    s = svc.get(sid)
    assert s["study_status"] == "InProgress" and s["study_end_datetime"] is None


def test_completed_study_reopens_on_more_work(svc, tmp_path):
    study = svc.register(seed_register_request())
    sid = study["study_id"]
    sop = _images(study)[0]["sop_instance_id"]
    _expose(svc, tmp_path, sop)
    svc.set_study_status(sid, "Completed")
    svc.retake(sop)
    assert svc.get(sid)["study_status"] == "InProgress"
    svc.set_study_status(sid, "Completed")
    svc.append_images(sid, [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": ""}])
    assert svc.get(sid)["study_status"] == "InProgress"


def test_lock_blocks_changes_but_not_a_running_exposure(svc, tmp_path):
    study = svc.register(seed_register_request())
    sid = study["study_id"]
    a, b, c = (im["sop_instance_id"] for im in _images(study))
    _expose(svc, tmp_path, a)
    svc.mark_exposing(b)
    svc.set_lock(sid, True)
    assert svc.get(sid)["study_lock"] == "Locked"
    before = _snapshot(svc)
    blocked = [
        lambda: svc.update(sid, _update_request()),
        lambda: svc.append_images(sid, [{"view_id": "View_DX_T_A_SK_AP_00"}]),
        lambda: svc.retake(a),
        lambda: svc.delete_images(sid, [c]),
        lambda: svc.judge(a, True),
        lambda: svc.set_study_status(sid, "Completed"),
        lambda: svc.delete_studies([sid]),
        lambda: svc.mark_exposing(c),
    ]
    for fn in blocked:
        assert _err(fn).code is STUDY_LOCKED
    assert _snapshot(svc) == before
    f, p = _files(tmp_path, b)
    assert svc.mark_exposed(b, {}, f, p)["expose_status"] == "Exposed"  # in flight: lands
    _files(tmp_path, c)
    assert _err(svc.mark_imported, c, f).code is STUDY_LOCKED  # an import does not
    assert _err(svc.set_lock, sid, "Open").code is INVALID_FIELD
    assert _err(svc.set_lock, sid, None).code is MISSING_FIELD
    svc.set_lock(sid, "Locked")  # repeat: no-op
    svc.set_lock(sid, "Unlocked")
    svc.judge(a, True)
    svc.update(sid, _update_request(patient_name="Unlocked now"))


# -- delete ------------------------------------------------------------------------------------
def test_delete_images(svc, tmp_path):
    study = svc.register(seed_register_request())
    sid = study["study_id"]
    a, b, c = (im["sop_instance_id"] for im in _images(study))
    _expose(svc, tmp_path, c)
    other = svc.register(seed_register_request())
    before = _snapshot(svc)
    err = _err(svc.delete_images, sid, [a, _images(other)[0]["sop_instance_id"]])
    assert err.code is IMAGE_NOT_FOUND
    assert _err(svc.delete_images, sid, []).code is MISSING_FIELD
    assert _err(svc.delete_images, sid, "a").code is INVALID_FIELD
    assert _err(svc.delete_images, "nope", [a]).code is STUDY_NOT_FOUND
    svc.mark_exposing(b)
    assert _err(svc.delete_images, sid, [b]).code is INVALID_TRANSITION
    svc.mark_expose_failed(b)
    assert _snapshot(svc)[0][0]["study_id"] == before[0][0]["study_id"]
    outside = tmp_path.parent / f"outside-{c}.dcm"
    outside.write_bytes(b"keep")
    svc.delete_images(sid, [c, c])
    assert not (tmp_path / "images" / f"{c}.dcm").exists()
    assert not (tmp_path / "images" / f"{c}.png").exists()
    left = svc.get(sid)
    assert [im["sop_instance_id"] for im in _images(left)] == [a, b]
    assert len(left["series"]) == 1  # the emptied series went too
    assert outside.exists()
    outside.unlink()


def test_delete_studies_all_or_nothing(svc, tmp_path):
    s1 = svc.register(seed_register_request())
    s2 = svc.register(seed_register_request())
    s3 = svc.register(seed_register_request())
    sop = _images(s1)[0]["sop_instance_id"]
    _expose(svc, tmp_path, sop)
    svc.set_lock(s3["study_id"], "Locked")
    before = _snapshot(svc)
    assert _err(svc.delete_studies, [s1["study_id"], s3["study_id"]]).code is STUDY_LOCKED
    assert _err(svc.delete_studies, [s1["study_id"], "nope"]).code is STUDY_NOT_FOUND
    assert _err(svc.delete_studies, []).code is MISSING_FIELD
    assert _err(svc.delete_studies, "x").code is INVALID_FIELD
    assert _err(svc.delete_studies, [5]).code is INVALID_FIELD
    assert _snapshot(svc) == before
    got = svc.delete_studies([s1["study_id"], s2["study_id"], s1["study_id"]])
    assert got == {"@type": "type.googleapis.com/dr.study.Stat", "total": 1, "exposed": 0}
    assert not (tmp_path / "images" / f"{sop}.dcm").exists()
    assert _err(svc.get, s1["study_id"]).code is STUDY_NOT_FOUND
    assert _err(svc.image, sop).code is IMAGE_NOT_FOUND
    assert svc.db.query("SELECT COUNT(*) AS n FROM images")[0]["n"] == 3


# -- search ----------------------------------------------------------------------------------------
def test_list_search_and_paging(svc, clock):
    people = [("P100", "Alice Zhang", "ACC1"), ("P101", "alice wong", "ACC2"),
              ("P200", "Bob_Li", "ACC3"), ("Q300", "Carol 100%", "XYZ9"),
              ("P400", "Dave", "ACC5")]
    ids = []
    for i, (pid, name, acc) in enumerate(people):
        # one study per local day: 2025-06-25 .. 2025-06-29 at 23:30 site time
        clock.t = datetime(2025, 6, 25 + i, 15, 30, tzinfo=UTC)
        ids.append(svc.register(seed_register_request(
            patient_id=pid, patient_name=name, accession_number=acc,
            patient_english_name=f"EN{i}"))["study_id"])
    assert ids[0].startswith("20250625233000")
    svc.set_study_status(ids[1], "InProgress")

    def find(**q):
        got = svc.list_studies(q)
        return got["count"], [s["study_id"] for s in got["studies"]]

    everything = svc.list_studies()
    assert everything["@type"] == "type.googleapis.com/dr.study.StudyList"
    assert (everything["count"], everything["page"], everything["page_size"]) == (5, 1, 20)
    assert [s["study_id"] for s in everything["studies"]] == ids[::-1]  # newest first
    assert list(everything["studies"][0]) == list(SEED["register"]["data"])[1:]
    assert find(patient_name="ALICE") == (2, [ids[1], ids[0]])
    assert find(patient_name="en3") == (1, [ids[3]])
    assert find(patient_id="p1") == (2, [ids[1], ids[0]])
    assert find(accession_number="acc") == (4, [ids[4], ids[2], ids[1], ids[0]])
    assert find(keyword="xyz") == (1, [ids[3]])
    assert find(keyword="100%") == (1, [ids[3]])  # % is literal
    assert find(patient_name="b_l") == (1, [ids[2]])  # _ is literal
    assert find(patient_name="b%l") == (0, [])
    assert find(study_status="InProgress") == (1, [ids[1]])
    assert find(study_status=["Arrived", "InProgress"])[0] == 5
    # dates are site days (UTC+8): the 23:30 registrations belong to their local day
    assert find(date_from="2025-06-26", date_to="2025-06-27") == (2, [ids[2], ids[1]])
    assert find(date_from="2025-06-29") == (1, [ids[4]])
    assert find(date_to="2025-06-25") == (1, [ids[0]])
    page = svc.list_studies({"page": 2, "page_size": 2})
    assert page["count"] == 5 and [s["study_id"] for s in page["studies"]] == [ids[2], ids[1]]
    assert svc.list_studies({"page": "3", "page_size": "2"})["studies"][0]["study_id"] == ids[0]
    assert svc.list_studies({"page": 9})["studies"] == []
    assert svc.search(patient_name="dave", product="DROS")["count"] == 1
    assert svc.search(product="VETDROS")["count"] == 0
    for bad in ({"page": 0}, {"page_size": 201}, {"page": "x"}, {"page": True},
                {"date_from": "25/06/2025"}, {"date_to": 20250625}, {"study_status": "Done"},
                {"patient_id": 5}, {"patient_name": "x" * 65}, {"product": "CT"}):
        assert _err(svc.list_studies, bad).code is INVALID_FIELD, bad


# -- reads for the task service ------------------------------------------------------------------------
def test_image_and_image_context(svc, tmp_path):
    study = svc.register(seed_register_request(patient_sex="CM", pregnancy_status="0001"),
                         language="zh")
    im = _images(study)[0]
    assert svc.image(im["sop_instance_id"]) == im
    ctx = svc.image_context(im["sop_instance_id"])
    assert set(ctx) == {"study", "patient", "series", "image", "view"}
    assert list(ctx["study"]) == list(STUDY_FIELDS)
    assert list(ctx["series"]) == list(SERIES_FIELDS)
    assert ctx["patient"]["dicom_patient_sex"] == "M"
    assert ctx["patient"]["sex_neutered"] == "ALTERED"
    assert ctx["patient"]["pregnancy_status"] == "0001"
    assert ctx["patient"]["is_sedation"] is True
    assert ctx["view"]["view_id"] == "View_DX_T_A_SK_AP_00"
    assert ctx["image"]["sop_instance_id"] == im["sop_instance_id"]
    whole = svc.study_of_image(im["sop_instance_id"])
    assert whole["study_id"] == study["study_id"] and len(_images(whole)) == 3
    assert _err(svc.image, "1.2.3").code is IMAGE_NOT_FOUND
    assert _err(svc.image_context, "1.2.3").code is IMAGE_NOT_FOUND
    assert set(CREATED_IMAGE_FIELDS) - set(IMAGE_FIELDS) == {"image_status"}


def _drain(sub, n: int, timeout: float = 30.0) -> list:
    """The next ``n`` events of a pull subscription (waiting up to ``timeout`` for each)."""
    out = []
    for _ in range(n):
        ev = sub.get(timeout=timeout)
        assert ev is not None, f"only {len(out)} of {n} events arrived: {out}"
        out.append(ev)
    return out


def test_events_after_commit(svc, tmp_path):
    sub = svc.hub.subscribe("DIOS/STUDY/*")
    broken = svc.hub.subscribe("DIOS/STUDY/*", handler=lambda ev: 1 / 0)  # breaks nothing
    study = svc.register(seed_register_request())
    sid = study["study_id"]
    _expose(svc, tmp_path, _images(study)[0]["sop_instance_id"])
    _err(svc.set_study_status, sid, "Arrived")
    svc.set_study_status(sid, "Completed")
    svc.delete_studies([sid])
    seen = _drain(sub, 5)
    assert [e.name for e in seen] == ["study.registered", "image.updated", "image.updated",
                                      "study.completed", "study.deleted"]
    assert all(e.deviceUri == f"DIOS/STUDY/{sid}" and e.value == sid for e in seen)
    assert sub.get(timeout=0.2) is None  # the refused change published nothing
    broken.close()


# -- concurrency ---------------------------------------------------------------------------------
def _run_threads(target, n):
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_study_ids_unique_under_concurrency(any_svc):
    ids = []

    def worker(i):
        for _ in range(6):
            ids.append(any_svc.register(seed_register_request(patient_id=f"T{i}"))["study_id"])

    _run_threads(worker, 5)  # the clock is frozen: every id comes from the same millisecond
    assert len(ids) == 30 and len(set(ids)) == 30
    assert all(len(s) == 17 and s.isdigit() for s in ids)
    assert sorted(ids)[0] == "20250625143339420"


def test_no_lost_update_concurrent_fields(any_svc):
    sid = any_svc.register(seed_register_request())["study_id"]
    fields = ["weight", "thickness", "length", "ref_physician", "comment"]

    def worker(i):
        field = fields[i]
        for n in range(8):
            value = n + 1 if field in ("weight", "thickness", "length") else f"{field}-{n}"
            any_svc.update(sid, _update_request(**{field: value}))

    _run_threads(worker, len(fields))
    got = any_svc.get(sid)
    assert (got["weight"], got["thickness"], got["length"]) == (8, 8, 8)
    assert got["ref_physician"] == "ref_physician-7" and got["comment"] == "comment-7"


def test_no_lost_update_read_modify_write(any_svc):
    sid = any_svc.register(seed_register_request(weight=0))["study_id"]
    conflicts = []

    def worker(i):
        for _ in range(6):
            while True:
                v = any_svc.study_version(sid)
                w = any_svc.get(sid)["weight"]
                try:
                    any_svc.update(sid, _update_request(weight=w + 1), expected_version=v)
                    break
                except DiosError as e:
                    assert e.code is CONFLICT
                    conflicts.append(1)

    _run_threads(worker, 4)
    assert any_svc.get(sid)["weight"] == 24


def test_an_exposure_lands_in_exactly_one_image(any_svc, tmp_path):
    study = any_svc.register(seed_register_request())
    sop = _images(study)[0]["sop_instance_id"]
    f, p = _files(tmp_path, sop)
    any_svc.mark_exposing(sop)
    results = []

    def worker(i):
        try:
            any_svc.mark_exposed(sop, {"thread": i}, f, p)
            results.append(("ok", i))
        except DiosError as e:
            results.append((e.code.name, i))

    _run_threads(worker, 6)
    oks = [i for r, i in results if r == "ok"]
    assert len(oks) == 1
    assert sorted(r for r, _ in results if r != "ok") == ["INVALID_TRANSITION"] * 5
    assert any_svc.image(sop)["acquisition_context"] == {"thread": oks[0]}
    assert any_svc.stat(study["study_id"])["exposed"] == 1


def test_shapes_identical_on_postgresql(any_svc, tmp_path):
    study = any_svc.register(seed_register_request(), language="zh")
    _same_shape(study, SEED["register"]["data"])
    sop = _images(study)[0]["sop_instance_id"]
    got = _expose(any_svc, tmp_path, sop)
    assert got["acquisition_context"] == {"kV": 70, "mAs": 12.5}
    back = any_svc.get(study["study_id"])
    assert back["is_anaesthesia"] is True and back["weight"] == 25
    assert back["series"][0]["is_pre_install"] is True
    assert back["series"][0]["images"][0]["expose_status"] == "Exposed"


# -- with the shipped protocol catalog ---------------------------------------------------------
def test_with_the_real_catalog(tmp_path, clock):
    from dios.catalog.service import CatalogService

    cat = CatalogService()
    svc = _service(f"sqlite:///{tmp_path / 'real.db'}", tmp_path, clock, catalog=cat)
    proc = cat.procedures(product="DROS")[0]["procedure_id"]
    views = [{"view_id": v, "procedure_id": proc} for v in cat.procedure_view_ids(proc)]
    views.append({"view_id": views[0]["view_id"], "procedure_id": ""})
    got = svc.register(seed_register_request(views=views), language="zh")
    _same_shape(got, SEED["register"]["data"])
    first = cat.view(views[0]["view_id"], "DROS", "zh")
    assert got["series"][0]["performed_protocol_code_meaning"] == cat.procedure(
        proc, "DROS", "zh")["procedure_name"]
    assert _images(got)[0]["view_description"] == first["view_description"]
    assert got["series"][0]["body_part"] == first["body_part_id"]
    ctx = svc.image_context(_images(got)[0]["sop_instance_id"])
    assert ctx["view"]["config_object"]["DX"]["ViewID"] == views[0]["view_id"]
    # a human view is not part of the veterinary catalog
    err = _err(svc.register, seed_register_request(views=views[:1]), product="VETDROS")
    assert err.code is CATALOG_NOT_FOUND and err.data["field"] == "views[0].view_id"
    vproc = cat.procedures(product="VETDROS")[0]["procedure_id"]
    vviews = [{"view_id": v, "procedure_id": vproc} for v in cat.procedure_view_ids(vproc)]
    vet = svc.register(seed_register_request(views=vviews, patient_type="Dog", patient_sex="SF",
                                             sex_neutered="ALTERED"), product="VETDROS")
    assert vet["product"] == "VETDROS" and len(_images(vet)) == len(vviews)
    assert all(im["product"] == "VETDROS" for im in _images(vet))
    svc.db.close()


def test_recover_resets_interrupted_exposures_and_removes_orphan_files(any_svc, tmp_path):
    svc = any_svc
    study = svc.register(seed_register_request())
    sops = [im["sop_instance_id"] for im in _images(study)]
    kept = _expose(svc, tmp_path, sops[0])  # exposed and saved: untouched
    svc.mark_exposing(sops[1])  # the server is killed during this exposure
    study_dir = tmp_path / "images" / study["study_instance_uid"]
    study_dir.mkdir(parents=True)
    orphan = study_dir / f"{sops[1]}.dcm"  # written, never committed
    orphan.write_bytes(b"DICM")
    partial = study_dir / f".tmp-{sops[1]}.dcm.abc123"  # an interrupted atomic write
    partial.write_bytes(b"DI")
    (tmp_path / "previews").mkdir()
    orphan_preview = tmp_path / "previews" / f"{sops[1]}.png"
    orphan_preview.write_bytes(b"\x89PNG")
    outside = tmp_path / "calibration.bin"  # outside images/ and previews/: never touched
    outside.write_bytes(b"x")
    events = []
    sub = svc.hub.subscribe("DIOS/STUDY/*")

    got = svc.recover()

    assert got["reset"] == [sops[1]]
    assert sorted(got["removed"]) == sorted(str(p) for p in (orphan, partial, orphan_preview))
    assert not orphan.exists() and not partial.exists() and not orphan_preview.exists()
    assert outside.exists()
    assert os.path.isfile(kept["image_file_path"])
    assert os.path.isfile(svc.image_context(sops[0])["image"]["preview_path"])
    ctx = svc.image_context(sops[1])["image"]
    assert (ctx["expose_status"], ctx["image_status"], ctx["storage_status"]) == (
        "Unexposed", "QUEUING", "NotSaved")
    assert svc.image(sops[0])["expose_status"] == "Exposed"
    events = [(e.name, e.data) for e in _drain(sub, 1)]
    assert events == [("image.updated", {"study_id": study["study_id"], "instance_uid": sops[1],
                                         "expose_status": "Unexposed",
                                         "reason": "recovered at start"})]
    # the image can be exposed again; a second recovery finds nothing to do
    svc.mark_exposing(sops[1])
    svc.mark_expose_failed(sops[1])
    assert svc.recover() == {"reset": [], "removed": []}


def test_recovery_moves_are_in_the_transition_table():
    from dios.study.model import RECOVERY

    assert set(RECOVERY) == {"expose_status", "image_status"}
    for field, (old, new) in RECOVERY.items():
        assert can_move(field, old, new)


def test_recover_resets_only_this_consoles_exposures(any_svc, tmp_path):
    """Consoles sharing one database: recovery at one console's start leaves another
    console's exposure in progress alone."""
    from dios.study.service import StudyService

    room1 = any_svc
    room1.station = "ROOM1"
    room2 = StudyService(room1.db, room1.catalog, room1.uids, product=room1.product,
                         data_dir=tmp_path / "room2", station="ROOM2")
    study = room1.register(seed_register_request())
    sops = [im["sop_instance_id"] for im in _images(study)]
    room1.mark_exposing(sops[0])
    room2.mark_exposing(sops[1])
    assert room2.recover()["reset"] == [sops[1]]
    assert room1.image(sops[0])["expose_status"] == "Exposing"  # untouched
    assert room1.recover()["reset"] == [sops[0]]
