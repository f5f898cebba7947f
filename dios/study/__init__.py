"""The study service: patients, studies, series and images, persisted.

What lives here: ``model`` (the seed's reply field lists, enumerations and the status
transition table), ``validation`` (patient/study field rules), ``service``
(:class:`StudyService`).

May import: the standard library, ``dios.codes``, ``dios.store``, ``dios.uids``. The
protocol catalog is passed in (duck-typed ``view``/``procedure``); never the shim, the bus
or devices.
"""

from dios.study.model import TRANSITIONS, check_transition
from dios.study.service import StudyService

__all__ = ["TRANSITIONS", "StudyService", "check_transition"]
