"""tests/test_data_plane.py on uvloop (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_data_plane import *  # noqa: E402,F403
