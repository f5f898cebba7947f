"""Workflows that drive several devices and services together.

What lives here: the exposure workflow (technique -> prepare -> all ready -> expose ->
frame -> pipeline -> DICOM + preview) and the wait helpers it is built from.

May import: everything in ``dios`` below the shim, ``processing``. Never ``simulators`` or
``drivers`` directly (the engine plugs those in).
"""
