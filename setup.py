"""Build of clasp_fast's compiled core (the Cython sources in ``_ext/``).

Environment switches, all off by default:

* ``CLASP_FAST_DEBUG=1``    -- line tracing and no ``-O3``: for coverage of the compiled code.
* ``CLASP_FAST_ANNOTATE=1`` -- write Cython's HTML annotation next to each ``.pyx``
  (shows where hot loops still call into Python).
* ``CLASP_FAST_ONLY=name,...`` -- build only these extension modules (while developing one of them).
"""

import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - pip installs Cython from build-system.requires
    sys.exit("clasp_fast needs Cython to build from source: pip install 'Cython>=3.0'")

# Each compiled module: (module name inside clasp_fast, source in _ext/).
MODULES = {
    "_codec": "_ext/codec.pyx",
    "_address": "_ext/address.pyx",
}

debug = os.environ.get("CLASP_FAST_DEBUG") == "1"
annotate = os.environ.get("CLASP_FAST_ANNOTATE") == "1"
only = {name.strip() for name in os.environ.get("CLASP_FAST_ONLY", "").split(",") if name.strip()}

directives = {
    "language_level": "3",
    "embedsignature": True,
    # Safe because every read goes through the length-checked helpers in _ext/buffers.pxd.
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
    "linetrace": debug,
    "profile": debug,
}

if sys.platform == "win32":
    compile_args = ["/O2"]
else:
    compile_args = ["-O0", "-g"] if debug else ["-O3"]
macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if debug else []

extensions = [
    Extension(
        f"clasp_fast.{name}",
        [source],
        include_dirs=["_ext"],
        extra_compile_args=compile_args,
        define_macros=macros,
    )
    for name, source in MODULES.items()
    if not only or name in only
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=annotate,
        include_path=["_ext"],
    ),
)
