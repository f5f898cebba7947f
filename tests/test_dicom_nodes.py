"""The address book of remote DICOM nodes: validation, versioned edits, the caller check."""

from __future__ import annotations

import pytest

from dios.codes import CONFLICT, DUPLICATE, INVALID_FIELD, MISSING_FIELD, NOT_FOUND, DiosError
from dios.config import ConfigError, load_config
from dios.exchange.nodes import NodeStore
from dios.store import open_database

PACS = {"name": "Main PACS", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242,
        "roles": ["query", "storage", "commitment"], "auto_send": True}


@pytest.fixture()
def nodes(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'n.db'}")
    yield NodeStore(db)
    db.close()


def test_create_list_update_delete(nodes):
    node = nodes.create(PACS)
    assert node.roles == ("storage", "commitment", "query")  # in the documented order
    assert node.auto_send and not node.allow_incoming and node.version == 1
    assert [n.name for n in nodes.list("storage")] == ["Main PACS"]
    assert nodes.list("worklist") == []
    moved = nodes.update(node.id, {"version": 1, "port": 4343, "allow_incoming": True})
    assert (moved.port, moved.version, moved.allow_incoming) == (4343, 2, True)
    with pytest.raises(DiosError) as err:
        nodes.update(node.id, {"version": 1, "port": 1})
    assert err.value.code == CONFLICT and nodes.get(node.id).port == 4343
    assert nodes.find_caller("ORTHANC", "127.0.0.1") == moved
    assert nodes.find_caller("ORTHANC", "10.0.0.9") is None
    assert nodes.find_caller("OTHER", "127.0.0.1") is None
    nodes.delete(node.id)
    with pytest.raises(DiosError) as err:
        nodes.get(node.id)
    assert err.value.code == NOT_FOUND


@pytest.mark.parametrize("field,value,code", [
    ("ae_title", "", MISSING_FIELD), ("ae_title", "A" * 17, INVALID_FIELD),
    ("ae_title", "BACK\\SLASH", INVALID_FIELD), ("ae_title", "    ", INVALID_FIELD),
    ("ae_title", "TAB\tAE", INVALID_FIELD), ("host", "a host", INVALID_FIELD),
    ("port", 0, INVALID_FIELD), ("port", 70000, INVALID_FIELD), ("port", "104", INVALID_FIELD),
    ("port", True, INVALID_FIELD), ("roles", ["storage", "printing"], INVALID_FIELD),
    ("roles", "storage", INVALID_FIELD), ("auto_send", "yes", INVALID_FIELD),
    ("name", "", MISSING_FIELD), ("tls", True, INVALID_FIELD),
])
def test_bad_fields_are_refused_and_nothing_is_stored(nodes, field, value, code):
    with pytest.raises(DiosError) as err:
        nodes.create({**PACS, field: value})
    assert err.value.code == code and err.value.data.get("field") == field
    assert nodes.list() == []


def test_names_are_unique(nodes):
    nodes.create(PACS)
    with pytest.raises(DiosError) as err:
        nodes.create({**PACS, "ae_title": "OTHER"})
    assert err.value.code == DUPLICATE and len(nodes.list()) == 1


def test_the_consoles_own_ae_title_is_checked_in_the_config(tmp_path):
    cfg_file = tmp_path / "dios.toml"
    cfg_file.write_text('[dicom]\nae_title = "DR-ROOM-2"\nport = 11112\n')
    cfg = load_config(cfg_file, data_dir=tmp_path)
    assert (cfg.dicom.ae_title, cfg.dicom.port, cfg.dicom.host) == ("DR-ROOM-2", 11112, "127.0.0.1")
    cfg_file.write_text('[dicom]\nae_title = "FAR-TOO-LONG-AE-TITLE"\n')
    with pytest.raises(ConfigError, match="ae_title"):
        load_config(cfg_file, data_dir=tmp_path)


def test_the_console_runs_its_scp_for_allowed_callers(tmp_path):
    """With ``[dicom] port`` set, the console answers C-ECHO from a node allowed to call
    in, refuses an unknown caller, and stops listening when it stops."""
    import socket

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from dios.config import ListenerConfig
    from dios.serve import Console
    from tests.console_helpers import ADMIN_INITIAL, FAST_SCRYPT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(None, data_dir=tmp_path)
    cfg.http = ListenerConfig("127.0.0.1", 0)
    cfg.rpc = ListenerConfig("127.0.0.1", 0)
    cfg.dicom.port = port
    cfg.devices.clock_scale = 200.0
    cfg.devices.panel = "FLUORO_1024"
    console = Console(cfg, calibrate=False, auth_options={
        "initial_admin_password": ADMIN_INITIAL, "scrypt_params": FAST_SCRYPT}).start()
    try:
        console.services.exchange.nodes.create({
            "name": "Cloud gateway", "ae_title": "GATEWAY", "host": "127.0.0.1", "port": 104,
            "allow_incoming": True})

        def echo(calling: str) -> bool:
            ae = AE(ae_title=calling)
            ae.add_requested_context(Verification)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
            assoc = ae.associate("127.0.0.1", port, ae_title=cfg.dicom.ae_title)
            try:
                return assoc.is_established and assoc.send_c_echo().Status == 0
            finally:
                if assoc.is_established:
                    assoc.release()
                ae.shutdown()

        assert echo("GATEWAY")
        assert not echo("STRANGER")
    finally:
        console.stop()
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
