"""Drivers for real hardware.

What lives here: backends that implement ``dios.devices.backends`` over real transports
(pyserial's ``serial_for_url``: ``serial:///dev/ttyUSB0``, ``socket://host:port``,
``loop://``, ``spy://`` for hexdumps; pyusb), and the wire-protocol codecs they speak.

May import: ``dios.codes``, ``dios.clock``, ``dios.devices.backends``, pyserial, pyusb.
Never ``simulators`` (the simulators import the codecs from here, not the reverse).
"""
