"""The task service: the console's device and acquisition tasks on top of the bus.

What lives here: :class:`~dios.task.service.TaskService` - device actions and commands
in the seed's shape (``deviceUri``/``reqName``/``reqParam``/``reqTransaction``/
``reqClientID``) onto the bus, the global status (``TaskGlobalStatus``), the selection of
the image to expose (which applies its APR technique to the generator), the filling of
that image by the next exposure (frame -> pipeline -> DICOM file -> study service), PNG
uploads turned into DICOM, and downloads of the image file and of its preview.

May import: ``dios`` core (bus, codes, messages, uri, events, topics), ``dios.acquisition`` (the
exposure lifecycle it is a facade over),
``dios.dicom``, ``dios.atomic``, ``dios.uids``, ``dios.store.files`` (private file
modes), ``processing``; the study and catalog
services are passed in (never imported from the shim, never the reverse).
"""
