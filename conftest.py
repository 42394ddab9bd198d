"""Root pytest configuration: the normal test run skips benchmarks.

``pytest`` runs the tests and skips everything that uses the ``benchmark`` fixture;
``pytest --benchmark-only`` (here or in ``benchmarks/``) runs only the benchmarks.
"""

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if not config.getoption("benchmark_only", default=False):
        config.option.benchmark_skip = True
