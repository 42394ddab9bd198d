"""tests/test_client.py on uvloop (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_client import *  # noqa: E402,F403
