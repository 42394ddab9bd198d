"""tests/test_hybrid.py on uvloop (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_hybrid import *  # noqa: E402,F403
