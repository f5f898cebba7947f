"""The image pipeline: raw detector frames to presentation images.

What lives here: calibration maps (``calibration``), corrections (``corrections``),
collimator detection (``collimator``), automatic window, exposure and deviation index
(``window``), multi-scale enhancement (``enhance``), presentation output (``output``),
processing profiles (``profiles``), validating wrappers around the compiled kernels
(``lut``), the numba kernels (``_kernels``, ``_collimator_kernels``) and the pipeline that
chains the stages (``pipeline``).

May import: numpy, numba, scipy, OpenCV and ``native`` (the Cython kernels). Never
``dios``, ``drivers`` or ``simulators``: the pipeline knows nothing of the device bus, the
hardware or the simulated room (contract ``processing-pure`` in ``.importlinter``, checked by
``make lint``). In ``dios``, the detector device (``processing.calibration``) and
``dios.acquisition`` (the pipeline) use it.

numba's OpenMP workers are made to sleep instead of spinning after a parallel kernel
(``OMP_WAIT_POLICY=passive`` unless already set), so that they do not steal the second
core from OpenCV between kernels. numba picks its threading layer as usual (OpenMP where
available; ``NUMBA_THREADING_LAYER`` overrides) and uses ``NUMBA_NUM_THREADS`` threads;
``Pipeline(threads=n)`` lowers that per pipeline.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
