"""Drivers for real hardware.

What lives here: backends that implement ``dios.devices.backends`` over real transports
(pyserial's ``serial_for_url``: a device path such as ``/dev/ttyUSB0``, ``socket://host:port``,
``loop://``, ``spy://`` for hexdumps; pyusb), and the wire-protocol codecs they speak.

Drivers run on the wall clock: every wait of a driver (reply timeouts, event deadlines,
port reads and writes) is measured with ``time.monotonic``/``time.sleep`` or the port's own
timeouts, never with a simulation clock, so an engine whose simulated devices run faster
than real time does not shorten the deadlines it gives real hardware.

May import: ``dios.codes``, ``dios.devices.backends``, pyserial, pyusb; never ``dios.clock``
or any other part of ``dios``. Never ``simulators`` (the simulators import the codecs from
here, not the reverse). Contract ``drivers-allowed`` in ``.importlinter``.
"""
