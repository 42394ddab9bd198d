# The documented path clasp_fast.fast_path for type checkers. At run time clasp_fast/_aliases.py makes it
# the module clasp_fast.transport.fast_path itself; this stub re-exports that module's public names.
from clasp_fast.transport.fast_path import *
