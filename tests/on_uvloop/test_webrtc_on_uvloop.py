"""tests/test_webrtc.py on uvloop (see conftest.py)."""

import pytest

pytest.importorskip("uvloop")

from tests.test_webrtc import *  # noqa: E402,F403
