"""tests/test_flush_hold.py on uvloop (see conftest.py): the hold counts loop iterations on either loop."""

import pytest

pytest.importorskip("uvloop")

from tests.test_flush_hold import *  # noqa: E402,F403
