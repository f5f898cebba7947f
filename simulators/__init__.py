"""Simulators that behave like the hardware.

What lives here: the simulated X-ray room that couples tube and panel (``room``), run-time
fault injection (``faults``), the generator model and its backend and wire server, the
detector panel formats, phantom, frame synthesis with ground truth, and the detector
backend. Simulators implement the backend contracts of ``dios.devices.backends`` and the
wire protocols of ``drivers`` so that real drivers can be tested against them.

May import: from ``dios`` only ``dios.codes``, ``dios.clock`` (simulated time),
``dios.devices.backends`` (the contracts implemented here) and ``dios.uri``; from ``drivers``
only the wire-protocol codecs (``drivers.<device>_protocol``, e.g.
``drivers.generator_protocol``), never a driver's transport; numpy, scipy and OpenCV.
Imported, inside ``dios``, only by ``dios.backends`` (the ``simulator://`` scheme) and
``dios.engine``. Contracts ``simulators-allowed`` and ``simulators-plugged-in`` in
``.importlinter``, checked by ``make lint``.
"""
