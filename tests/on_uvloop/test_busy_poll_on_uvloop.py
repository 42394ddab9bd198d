"""tests/test_busy_poll.py on uvloop (see conftest.py): the spinning keeps libuv polling too."""

import pytest

pytest.importorskip("uvloop")

from tests.test_busy_poll import *  # noqa: E402,F403
