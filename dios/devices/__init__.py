"""Device contracts and device logic.

What lives here: the :class:`~dios.devices.base.Device` base (command table, job runner,
event publication), the generator and detector device logic with their explicit state
machines, the backend protocols those devices drive, and the generator's parameter
tables. A device never knows whether its backend is a simulator or a real driver.

May import: ``dios.codes``, ``dios.messages``, ``dios.fsm``, ``dios.events``, ``dios.clock``,
``dios.uri``, and ``processing.calibration`` (the detector builds its calibration maps
with it). Never ``simulators`` or ``drivers`` (they are plugged in by ``dios.engine``).
"""
