"""tests/test_send_many.py on uvloop (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_send_many import *  # noqa: E402,F403
