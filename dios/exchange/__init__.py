"""The DICOM network side of the console: remote nodes, and the services that talk to them.

What lives here: the address book of remote application entities (``nodes``), and the
network services built on pynetdicom - verification (C-ECHO), the durable outbox that
sends stored images (C-STORE SCU) and reports them (storage commitment), the modality
worklist and procedure steps (C-FIND / N-CREATE / N-SET SCU), query/retrieve of priors,
and the console's own storage and query/retrieve SCP. They are driven by the acquisition
lifecycle's events on the hub (``image.stored``, ``study.completed`` ...), never called by
it. The file-level DICOM work (values, modules, the DX writer, reading) stays in
``dios.dicom``; this package reuses its modules for the messages it builds.

May import: ``dios.codes``, ``dios.events``, ``dios.messages``, ``dios.topics``,
``dios.uids``, ``dios.atomic``, ``dios.config``, ``dios.store``, ``dios.dicom``, pydicom and
pynetdicom. Never the other services (they are passed in), the shim, the devices, the bus or
the engine.
"""
