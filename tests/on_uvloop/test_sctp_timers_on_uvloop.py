"""tests/test_sctp_timers.py on uvloop, whose timers fire on whole milliseconds (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_sctp_timers import *  # noqa: E402,F403
