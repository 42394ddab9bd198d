# The documented path clasp_fast.udp_batch for type checkers. At run time clasp_fast/_aliases.py makes it
# the module clasp_fast.transport.udp_batch itself; this stub re-exports that module's public names.
from clasp_fast.transport.udp_batch import *
