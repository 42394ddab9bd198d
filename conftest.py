"""Root pytest configuration: tests and benchmarks run apart.

``pytest`` runs the tests and skips everything that uses the ``benchmark`` fixture;
``pytest --benchmark-only`` (here or in ``benchmarks/``) runs only the benchmarks and does not
collect ``tests/`` at all (so no test is listed as skipped).
"""

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent / "tests"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if not config.getoption("benchmark_only", default=False):
        config.option.benchmark_skip = True


def pytest_ignore_collect(collection_path: Path, config):
    if config.getoption("benchmark_only", default=False) and (
            collection_path == TESTS_DIR or TESTS_DIR in collection_path.parents):
        return True
    return None
