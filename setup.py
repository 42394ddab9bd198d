"""Build of clasp_fast's compiled core (the Cython sources in ``_ext/``).

Environment switches, all off by default:

* ``CLASP_FAST_DEBUG=1``    -- line tracing and no ``-O3``: for coverage of the compiled code.
* ``CLASP_FAST_ANNOTATE=1`` -- write Cython's HTML annotation next to each ``.pyx``
  (shows where hot loops still call into Python).
* ``CLASP_FAST_ONLY=name,...`` -- build only these extension modules (while developing one of them).

Switching between a release and a debug build regenerates and recompiles everything (the
mode of the last build is kept in ``build/clasp_fast_build_mode``); an annotate build always
re-runs Cython, since an up-to-date ``.c`` would otherwise skip it and write no HTML.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - pip installs Cython from build-system.requires
    sys.exit("clasp_fast needs Cython to build from source: pip install 'Cython>=3.0'")

# Each compiled module: (module name inside clasp_fast, source in _ext/). The C interfaces
# between them are _ext/clasp_fast/<module>.pxd (named after the module, as Cython looks them up).
MODULES = {
    "_codec": "_ext/codec.pyx",
    "_address": "_ext/address.pyx",
    "_dispatch": "_ext/dispatch.pyx",
    "_sctp": "_ext/sctp.pyx",
    "_dtls": "_ext/dtls.pyx",
    "_udp": "_ext/udp.pyx",
}

debug = os.environ.get("CLASP_FAST_DEBUG") == "1"
annotate = os.environ.get("CLASP_FAST_ANNOTATE") == "1"
only = {name.strip() for name in os.environ.get("CLASP_FAST_ONLY", "").split(",") if name.strip()}

# Modules that cimport others (through _ext/clasp_fast/*.pxd) read their object layouts at
# compile time: rebuilding one of those alone would leave the importer with stale layouts.
CIMPORTS = {"_dispatch": ("_codec", "_address"), "_sctp": ("_dtls",)}
only |= {name for name, cimported in CIMPORTS.items() if only & set(cimported)}

MODE_STAMP = os.path.join("build", "clasp_fast_build_mode")
mode = "debug" if debug else "release"


def previous_mode():
    try:
        with open(MODE_STAMP, encoding="ascii") as stamp:
            return stamp.read().strip()
    except OSError:
        return None


# Cython and build_ext only compare timestamps: without this, a debug build after a release
# build (or the reverse) would silently reuse the other mode's C code or compiled module.
mode_changed = previous_mode() != mode


class BuildExt(build_ext):
    """build_ext that rebuilds everything after a release/debug switch and records the mode."""

    def finalize_options(self):
        super().finalize_options()
        if mode_changed:
            self.force = True
        if self.parallel is None:  # the modules compile side by side on every core
            self.parallel = os.cpu_count() or 1

    def run(self):
        super().run()
        os.makedirs(os.path.dirname(MODE_STAMP), exist_ok=True)
        with open(MODE_STAMP, "w", encoding="ascii") as stamp:
            stamp.write(mode)

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
    # -g0: no debug symbols in release builds (a sixth of the size: 1.5 MB instead of 9 MB).
    compile_args = ["-O0", "-g"] if debug else ["-O3", "-g0"]
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
        force=mode_changed or annotate,
    ),
    cmdclass={"build_ext": BuildExt},
)
