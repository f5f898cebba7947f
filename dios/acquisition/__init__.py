"""The acquisition lifecycle: one exposure from selection to stored image.

What lives here: the exposure lifecycle as an explicit transition table (``lifecycle``),
the typed exposure context built from a study and the catalog (``context``), and the
one frame -> pipeline -> DICOM -> store sink (``sink``).

May import: ``dios`` below the shim (``codes``, ``messages``, ``events``, ``fsm``, ``uri``,
``devices``, ``dicom``, ``store``, ``uids``), ``processing``. Never ``simulators``,
``drivers`` or ``dios.shim``.
"""
