"""Randomized differential tests: the compiled matchers against plain reference matchers.

The reference live matcher is the router's rule written the obvious way
(docs/protocol.md §9.2): split after the first character, recurse over segments, a
segment with an embedded ``*`` takes any one segment and then the whole
pattern must pass the glob. The reference glob covers the glob syntax these
strategies generate (only ``*``), translated to a regular expression.
"""

from __future__ import annotations

import os
import re
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clasp_fast.address import Pattern, SubscriptionIndex, glob_match

SETTINGS = settings(max_examples=int(os.environ.get("CLASP_FAST_HYPOTHESIS_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def reference_glob(pattern: str, address: str) -> bool:
    """§9.3 for globs whose only special character is ``*``."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**", i):
            j = i + 2
            while pattern.startswith("/**", j):
                j += 3
            last_pair = j - 2
            if j == n:
                out.append(r"[\s\S]*")  # trailing '**' crosses '/'
                i = j
            elif (last_pair == 0 or pattern[last_pair - 1] == "/") and pattern[j] == "/":
                # a whole '**/' component: gone (not at the very end of the path), or a run ending in '/'
                out.append(r"(?:^|(?=[\s\S])|[\s\S]*/)")
                i = j + 1
            else:
                out.append(r"[^/]*")
                i = j
        elif pattern[i] == "*":
            out.append(r"[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    # the glob is byte-oriented; with only '*' and literals, characters behave the same
    return re.fullmatch("".join(out), address) is not None


def reference_live(pattern: str, address: str) -> bool:
    psegs = pattern[1:].split("/")
    asegs = address[1:].split("/")

    @cache
    def walk(i: int, j: int) -> bool:
        if i == len(psegs):
            return j == len(asegs)
        seg = psegs[i]
        if seg == "**":
            return any(walk(i + 1, k) for k in range(j, len(asegs) + 1))
        if j == len(asegs):
            return False
        if "*" in seg:  # '*' or an embedded '*': any one segment in the trie
            return walk(i + 1, j + 1)
        return seg == asegs[j] and walk(i + 1, j + 1)

    if not walk(0, 0):
        return False
    partial = any("*" in s and s not in ("*", "**") for s in psegs)
    return reference_glob(pattern, address) if partial else True


PATTERN_SEGMENT = st.one_of(
    st.sampled_from(["*", "**", "a", "b", "ab", "a*", "*b", "a*b", "b**", "**a", "x**y", "é", "é*"]),
    st.text(alphabet="ab*é", min_size=1, max_size=4),
)
ADDRESS_SEGMENT = st.one_of(
    st.sampled_from(["a", "b", "ab", "ba", "aab", "é", "éa", "x", "xy", "xay", "*"]),
    st.text(alphabet="abé*xy", max_size=4),
)


@st.composite
def patterns(draw):
    segments = draw(st.lists(PATTERN_SEGMENT, min_size=1, max_size=5))
    if draw(st.booleans()) and len(segments) > 0:
        segments.append("")  # a trailing empty segment is valid
    return "/" + "/".join(segments)


@st.composite
def addresses(draw):
    segments = draw(st.lists(ADDRESS_SEGMENT, min_size=1, max_size=6))
    first = draw(st.sampled_from(["/", "/", "/", "/", "x", "é"]))  # invalid first characters too
    return first + "/".join(segments)


@SETTINGS
@given(pattern=patterns(), address=addresses())
def test_pattern_against_reference(pattern, address):
    assert Pattern(pattern).matches(address) is reference_live(pattern, address)


@SETTINGS
@given(pattern=patterns(), address=addresses())
def test_glob_against_reference(pattern, address):
    assert glob_match(pattern, address) is reference_glob(pattern, address)


@SETTINGS
@given(
    pattern_list=st.lists(patterns(), min_size=1, max_size=25),
    address_list=st.lists(addresses(), min_size=1, max_size=12),
    removals=st.lists(st.integers(min_value=0, max_value=24), max_size=10),
    cache_size=st.sampled_from([0, 1, 4, 4096]),
)
def test_index_against_reference(pattern_list, address_list, removals, cache_size):
    index = SubscriptionIndex(cache_size=cache_size)
    keys = [index.add(p, i) for i, p in enumerate(pattern_list)]
    live = dict(enumerate(pattern_list))

    def check():
        for address in address_list:
            expected = tuple(i for i, p in live.items() if reference_live(p, address))
            assert index.match(address) == expected, (address, live)
            entries = index.match_entries(address)
            assert tuple(e[2] for e in entries) == expected
            assert all(e[1] == live[e[2]] for e in entries)

    check()
    for r in removals:
        if r < len(keys):
            assert index.remove(keys[r]) is (r in live)
            live.pop(r, None)
    check()
    # re-add what was removed: the new subscriptions come last in the order
    for r in sorted(set(range(len(pattern_list))) - set(live)):
        keys[r] = index.add(pattern_list[r], r)
        live[r] = pattern_list[r]
    live = {i: live[i] for i in list(k for k in live if k not in removals) + sorted(set(removals) & set(live))}
    check()
    assert len(index) == len(pattern_list)


@SETTINGS
@given(pattern_list=st.lists(patterns(), min_size=1, max_size=10), address=addresses())
def test_discard_subscriber_against_reference(pattern_list, address):
    index = SubscriptionIndex()
    for i, p in enumerate(pattern_list):
        index.add(p, "even" if i % 2 == 0 else "odd")
    index.match(address)
    index.discard_subscriber("even")
    expected = tuple("odd" for i, p in enumerate(pattern_list) if i % 2 and reference_live(p, address))
    assert index.match(address) == expected
    index.discard_subscriber("odd")
    assert len(index) == 0
    assert "1 nodes" in repr(index)
