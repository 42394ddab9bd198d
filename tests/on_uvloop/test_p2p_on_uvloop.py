"""tests/test_p2p.py on uvloop (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_p2p import *  # noqa: E402,F403
