"""Remote DICOM application entities (PACS, RIS, archives): the console's address book."""

SQL = """
CREATE TABLE dicom_nodes (
    id {pk},
    name TEXT NOT NULL UNIQUE,
    ae_title TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    tls INTEGER NOT NULL DEFAULT 0,
    roles TEXT NOT NULL DEFAULT '[]',
    auto_send INTEGER NOT NULL DEFAULT 0,
    allow_incoming INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1
);
"""
