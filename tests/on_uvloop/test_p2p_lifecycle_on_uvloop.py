"""tests/test_p2p_lifecycle.py on uvloop (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_p2p_lifecycle import *  # noqa: E402,F403
