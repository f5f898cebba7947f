"""Build and install the DIOS engine.

Dependency ranges live here and nowhere else. The Cython kernels in ``native/``
are compiled at install time; a missing compiler or Cython is an install error,
never a silent fallback to a slow path.
"""

import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup

try:
    import numpy
    from Cython.Build import cythonize
except ImportError as exc:  # pragma: no cover - exercised only on a broken build env
    sys.exit(
        f"DIOS build error: {exc}. The compiled core needs Cython>=3 and numpy>=2 "
        "at build time (pip installs them from pyproject.toml's build-system)."
    )

HERE = Path(__file__).parent

INSTALL_REQUIRES = [
    "numpy>=2.0,<3",
    "numba>=0.60,<1",
    "scipy>=1.11,<2",
    "opencv-python-headless>=4.9,<6",
    "pydicom>=3.0,<4",
    "pynetdicom>=3.0,<4",
    "pyserial>=3.5,<4",
    "msgpack>=1.0,<2",
    "pillow>=10,<14",
    "starlette>=0.40,<2",
    "uvicorn[standard]>=0.30,<1",
    "pyjwt>=2.8,<3",
]

EXTRAS = {
    "test": [
        "pytest>=8,<10",
        "pytest-timeout>=2.3,<3",
        "pytest-benchmark>=4,<6",
        "httpx>=0.27,<1",
        "ruff>=0.5",
        "import-linter>=2.17,<3",
        "hypothesis>=6.100,<7",
        "schemathesis>=4,<5",
        "openapi-spec-validator>=0.7,<1",
    ],
    "postgres": ["psycopg[binary]>=3.1,<4"],
}

COMPILE_ARGS = ["-O3"]

extensions = [
    Extension(
        name=f"native.{p.stem}",
        sources=[str(p.relative_to(HERE))],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
    )
    for p in sorted((HERE / "native").glob("_*.pyx"))
]
if not extensions:
    sys.exit("DIOS build error: no Cython sources found in native/")

setup(
    name="dios-engine",
    version="0.1.0",
    description="DIOS: an open engine for digital radiography consoles",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["dios*", "processing*", "native*", "drivers*", "simulators*"]),
    package_data={"dios": ["catalog/data/*.json", "i18n/*.json"], "native": ["*.pyx", "*.pxd"]},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["dios=dios.cli:main"]},
    zip_safe=False,
)
