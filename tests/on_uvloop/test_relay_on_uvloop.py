"""tests/test_relay.py on uvloop (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_relay import *  # noqa: E402,F403
