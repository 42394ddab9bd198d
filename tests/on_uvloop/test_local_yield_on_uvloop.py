"""tests/test_local_yield.py on uvloop (see conftest.py): the yield does not depend on the loop."""

import pytest

pytest.importorskip("uvloop")

from tests.test_local_yield import *  # noqa: E402,F403
