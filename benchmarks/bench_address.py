"""Pattern matching and subscription lookup, next to the official Python client (clasp-to).

Run: ``pytest benchmarks/bench_address.py --benchmark-only``. Groups put
clasp_fast and the baseline side by side:

* ``pattern-<kind>``: one ``Pattern.matches`` call vs ``Clasp._match_pattern``.
* ``index-<size>``: ``SubscriptionIndex.match`` uncached (``cache_size=0``) and
  cached, for several kinds of address, vs the official client's dispatch
  (a linear scan of ``_match_pattern`` over every subscription).
"""

from __future__ import annotations

import pytest

from clasp_fast.address import Pattern, SubscriptionIndex

clasp = pytest.importorskip("clasp")

SIZES = (10, 1_000, 100_000)

PATTERN_CASES = {
    "literal": ("/lumen/layer/0/opacity", "/lumen/layer/0/opacity"),
    "star": ("/lumen/layer/*/opacity", "/lumen/layer/7/opacity"),
    "globstar": ("/lumen/**", "/lumen/layer/7/opacity"),
    "globstar-middle": ("/lumen/**/opacity", "/lumen/scene/2/layer/7/opacity"),
    # clasp-to has no embedded wildcards: it answers False here (see README)
    "embedded": ("/lumen/layer/zone5*", "/lumen/layer/zone5abc"),
}

# One address per kind of subscription in the mix below; every size contains all of them.
ADDRESSES = {
    "literal": "/app0/layer/0/opacity",
    "star": "/app6/layer/6/x",
    "globstar": "/app7/scene7/a/b",
    "embedded": "/app8/zone8abc",
    "star-first": "/app9/q/9/color",
    "miss": "/app5/nothing/here",
}


def mixed_patterns(count: int) -> list[str]:
    """Subscriptions spread over 97 applications: 60 % literal, the rest wildcards of each kind."""
    patterns = []
    for i in range(count):
        app = f"app{i % 97}"
        kind = i % 10
        if kind < 6:
            patterns.append(f"/{app}/layer/{i}/opacity")
        elif kind == 6:
            patterns.append(f"/{app}/layer/{i}/*")
        elif kind == 7:
            patterns.append(f"/{app}/scene{i}/**")
        elif kind == 8:
            patterns.append(f"/{app}/zone{i}*")
        else:
            patterns.append(f"/{app}/*/{i}/color")
    return patterns


def official_client():
    """The official client, never connected; only its matcher and subscription table are used."""
    return clasp.Clasp("ws://127.0.0.1:7330")


@pytest.fixture(scope="module")
def indexes():
    built = {}
    for size in SIZES:
        patterns = mixed_patterns(size)
        uncached = SubscriptionIndex(cache_size=0)
        cached = SubscriptionIndex()
        client = official_client()
        for i, pattern in enumerate(patterns):
            uncached.add(pattern, i)
            cached.add(pattern, i)
            client._subscriptions[i] = (pattern, i)
        built[size] = (uncached, cached, client)
    return built


# -- single pattern -------------------------------------------------------------


@pytest.mark.parametrize("kind", PATTERN_CASES)
def bench_pattern_clasp_fast(benchmark, kind):
    pattern, address = PATTERN_CASES[kind]
    benchmark.group = f"pattern-{kind}"
    matches = Pattern(pattern).matches
    assert matches(address)
    assert benchmark(matches, address)


@pytest.mark.parametrize("kind", PATTERN_CASES)
def bench_pattern_clasp_to(benchmark, kind):
    pattern, address = PATTERN_CASES[kind]
    benchmark.group = f"pattern-{kind}"
    match_pattern = official_client()._match_pattern
    assert benchmark(match_pattern, pattern, address) is (kind != "embedded")


# -- subscription index ---------------------------------------------------------


@pytest.mark.parametrize("kind", ADDRESSES)
@pytest.mark.parametrize("size", SIZES)
def bench_index_uncached(benchmark, indexes, size, kind):
    uncached, _, _ = indexes[size]
    address = ADDRESSES[kind]
    benchmark.group = f"index-{size}"
    expected = uncached.match(address)
    assert (len(expected) == 0) is (kind == "miss")
    assert benchmark(uncached.match, address) == expected


@pytest.mark.parametrize("kind", ["literal", "embedded"])
@pytest.mark.parametrize("size", SIZES)
def bench_index_cached(benchmark, indexes, size, kind):
    _, cached, _ = indexes[size]
    address = ADDRESSES[kind]
    benchmark.group = f"index-{size}"
    first = cached.match(address)
    assert benchmark(cached.match, address) is first


@pytest.mark.parametrize("size", SIZES)
def bench_index_clasp_to_linear_scan(benchmark, indexes, size):
    """What the official client does per received message: try every subscription."""
    uncached, _, client = indexes[size]
    address = ADDRESSES["literal"]
    benchmark.group = f"index-{size}"
    match_pattern = client._match_pattern
    subscriptions = client._subscriptions

    def dispatch():
        return [callback for pattern, callback in subscriptions.values() if match_pattern(pattern, address)]

    if size >= 100_000:
        result = benchmark.pedantic(dispatch, rounds=3, iterations=1)
    else:
        result = benchmark(dispatch)
    assert tuple(result) == uncached.match(address)
