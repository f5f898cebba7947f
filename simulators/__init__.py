"""Simulators that behave like the hardware.

What lives here: the simulated X-ray room that couples tube and panel (``room``), run-time
fault injection (``faults``), the generator model and its backend and wire server, the
detector panel formats, phantom, frame synthesis with ground truth, and the detector
backend. Simulators implement the backend contracts of ``dios.devices.backends`` and the
wire protocols of ``drivers`` so that real drivers can be tested against them.

May import: ``dios.codes``, ``dios.clock``, ``dios.devices.backends``, the protocol codecs
in ``drivers`` (never a driver's transport), numpy, scipy and OpenCV.
"""
