# The documented path clasp_fast.address for type checkers. At run time clasp_fast/_aliases.py makes it
# the module clasp_fast.wire.address itself; this stub re-exports that module's public names.
from clasp_fast.wire.address import *
