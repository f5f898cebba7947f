"""The durable outbox of the DICOM network: one row per image and destination node.

``state``: Queued -> Sending -> Sent | Failed (Failed and Sent may be queued again by a
resend); ``next_attempt_at`` (seconds since the epoch) holds back a retry after a failure;
``attempts`` counts the tries; ``last_status`` is the peer's DIMSE status of the last try
(hex), ``last_error`` the console's result code and text; ``sent_at`` the acknowledged
success. At most one row per image and node."""

SQL = """
CREATE TABLE dicom_outbox (
    id {pk},
    sop_instance_uid TEXT NOT NULL,
    study_id TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'Queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_status TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    transfer_syntax TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sent_at TEXT,
    UNIQUE (sop_instance_uid, node_id)
);

CREATE INDEX dicom_outbox_due ON dicom_outbox (state, next_attempt_at);

CREATE INDEX dicom_outbox_study ON dicom_outbox (study_id);
"""
