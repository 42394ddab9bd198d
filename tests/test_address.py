"""Address validation, Pattern, glob_match and SubscriptionIndex (docs/protocol.md §9)."""

from __future__ import annotations

import gc
import pickle
import sys

import pytest

from clasp_fast.address import (
    Pattern,
    SubscriptionIndex,
    glob_match,
    is_valid_address,
    validate_address,
    validate_pattern,
)
from clasp_fast.errors import AddressError, ClaspError, PatternError

from .spec_data import load_json

PATTERN_ROWS = load_json("patterns.json")


def row_id(row):
    return f"{row['pattern']!r}~{row['address']!r}"


# -- conformance table ------------------------------------------------------


def test_conformance_table_is_complete():
    assert len(PATTERN_ROWS) == 91


@pytest.mark.parametrize("row", PATTERN_ROWS, ids=row_id)
def test_pattern_matches_router_live(row):
    if not row["router_subscription_accepted"]:
        with pytest.raises(PatternError):
            Pattern(row["pattern"])
        assert row["expected"] is False
        return
    assert Pattern(row["pattern"]).matches(row["address"]) is row["expected"]


@pytest.mark.parametrize("row", PATTERN_ROWS, ids=row_id)
def test_index_matches_router_live(row):
    index = SubscriptionIndex()
    if not row["router_subscription_accepted"]:
        with pytest.raises(PatternError):
            index.add(row["pattern"], "session")
        assert len(index) == 0
        assert index.match(row["address"]) == ()
        return
    index.add(row["pattern"], "session")
    expected = ("session",) if row["expected"] else ()
    assert index.match(row["address"]) == expected
    # the cached answer is the same
    assert index.match(row["address"]) == expected


@pytest.mark.parametrize("row", PATTERN_ROWS, ids=row_id)
def test_glob_match_column(row):
    assert glob_match(row["pattern"], row["address"]) is row["rust_glob_match"]


def test_whole_table_in_one_index():
    """Every accepted pattern in one index: each address gets exactly its table rows."""
    index = SubscriptionIndex()
    accepted = sorted({r["pattern"] for r in PATTERN_ROWS if r["router_subscription_accepted"]})
    for pattern in accepted:
        index.add(pattern, pattern)
    for row in PATTERN_ROWS:
        if row["router_subscription_accepted"]:
            assert (row["pattern"] in index.match(row["address"])) is row["expected"], row_id(row)


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["/", "/a", "/a/", "/a/b/c", "/lumen/layer/0/opacity", "/a b/ü", "/é/ü/ß", "/*", "/**/x",
     "/a/{b,c}", "/\x00", "/" + "x" * 70000],
)
def test_valid_addresses(address):
    validate_address(address)
    validate_pattern(address)
    assert is_valid_address(address)


@pytest.mark.parametrize(
    "address, reason",
    [
        ("", "address is empty"),
        ("a/b", "address must start with '/'"),
        ("**", "address must start with '/'"),
        ("!/a/*", "address must start with '/'"),
        ("//", "empty segment at byte offset 1"),
        ("/a//b", "empty segment at byte offset 3"),
        ("/é//b", "empty segment at byte offset 4"),
        ("/a/b//", "empty segment at byte offset 5"),
    ],
)
def test_invalid_addresses(address, reason):
    with pytest.raises(AddressError) as caught:
        validate_address(address)
    assert caught.value.reason == reason
    assert caught.value.address == address
    assert repr(address) in str(caught.value)
    assert not is_valid_address(address)
    with pytest.raises(PatternError) as caught_pattern:
        validate_pattern(address)
    assert caught_pattern.value.reason == reason.replace("address", "pattern")
    assert caught_pattern.value.address == address
    with pytest.raises(PatternError):
        Pattern(address)
    with pytest.raises(PatternError):
        SubscriptionIndex().add(address, object())


def test_error_hierarchy():
    assert issubclass(PatternError, AddressError)
    assert issubclass(AddressError, ClaspError)
    assert issubclass(AddressError, ValueError)


def test_non_str_input():
    assert is_valid_address(b"/a") is False
    assert is_valid_address(None) is False
    with pytest.raises(TypeError):
        validate_address(b"/a")
    with pytest.raises(TypeError):
        Pattern(42)
    with pytest.raises(TypeError):
        Pattern("/a").matches(b"/a")
    with pytest.raises(TypeError):
        SubscriptionIndex().match(7)
    with pytest.raises(TypeError):
        SubscriptionIndex().match(["unhashable"])


def test_lone_surrogate_is_an_address_error():
    bad = "/a/\udc80"
    assert not is_valid_address(bad)
    with pytest.raises(AddressError, match="UTF-8"):
        validate_address(bad)
    with pytest.raises(PatternError, match="UTF-8"):
        Pattern(bad)
    with pytest.raises(AddressError, match="UTF-8"):
        Pattern("/a/*").matches(bad)
    index = SubscriptionIndex()
    index.add("/**", 1)
    with pytest.raises(AddressError, match="UTF-8"):
        index.match(bad)
    assert index.match("/a/x") == (1,)


def test_trailing_empty_segment_rules():
    assert Pattern("/a/").matches("/a/")
    assert not Pattern("/a/").matches("/a")
    assert Pattern("/a/*").matches("/a/")


# -- Pattern --------------------------------------------------------------------


def test_pattern_attributes():
    literal = Pattern("/a/b")
    assert literal.pattern == "/a/b"
    assert literal.is_literal
    assert not Pattern("/a/*").is_literal
    assert not Pattern("/a/b*").is_literal
    assert not Pattern(r"/a/\*").is_literal
    assert Pattern("/x/{a,b}").is_literal  # no '*': braces are plain characters live
    assert repr(Pattern("/a/*")) == "Pattern('/a/*')"


def test_pattern_equality_hash_pickle():
    assert Pattern("/a/*") == Pattern("/a/*")
    assert Pattern("/a/*") != Pattern("/a/**")
    assert Pattern("/a") != "/a"
    assert len({Pattern("/a/*"), Pattern("/a/*"), Pattern("/b")}) == 2
    restored = pickle.loads(pickle.dumps(Pattern("/zone5*")))
    assert restored == Pattern("/zone5*")
    assert restored.matches("/zone5abc")


@pytest.mark.parametrize(
    "pattern, yes, no",
    [
        ("/lumen/layer/0/opacity", ["/lumen/layer/0/opacity"], ["/lumen/layer/0", "/lumen/layer/0/opacityx"]),
        ("/lumen/*/opacity", ["/lumen/3/opacity", "/lumen//opacity"], ["/lumen/3/4/opacity", "/lumen/opacity"]),
        ("/lumen/**", ["/lumen", "/lumen/", "/lumen/a/b/c"], ["/lumens", "/lume"]),
        ("/lumen/**/opacity", ["/lumen/opacity", "/lumen/x/y/opacity"], ["/lumen/x/opacity/y"]),
        ("/lumen/zone5*", ["/lumen/zone5", "/lumen/zone51"], ["/lumen/zone6", "/lumen/zone5/x"]),
        ("/a/*/**", ["/a/b", "/a/b/c/d"], ["/a"]),
        ("/**/**/**", ["/", "/a/b"], []),
        ("/a/**/b/**/c", ["/a/b/c", "/a/1/b/2/3/c"], ["/a/b/c/d", "/a/c"]),
        ("/**/b*", ["/b", "/x/y/bz"], ["/x/y/z"]),
        ("/a*/**", ["/ab/c", "/a/"], ["/ab", "/a"]),  # trailing /** in the glob needs the '/'
    ],
)
def test_pattern_cases(pattern, yes, no):
    compiled = Pattern(pattern)
    index = SubscriptionIndex()
    index.add(pattern, "s")
    for address in yes:
        assert compiled.matches(address), address
        assert index.match(address) == ("s",), address
    for address in no:
        assert not compiled.matches(address), address
        assert index.match(address) == (), address


def test_unicode_segments():
    pattern = Pattern("/灯/*/明るさ")
    assert pattern.matches("/灯/部屋1/明るさ")
    assert not pattern.matches("/灯/部屋1/明るさ2")
    assert Pattern("/é*").matches("/éa")
    assert Pattern("/**/😀").matches("/a/b/😀")
    index = SubscriptionIndex()
    index.add("/灯/**", "lamp")
    index.add("/é/ü", "exact")
    assert index.match("/灯/部屋1/明るさ") == ("lamp",)
    assert index.match("/é/ü") == ("exact",)
    assert index.match("/e/ü") == ()
    # the first character is dropped whole, even when it is not ASCII
    assert Pattern("/a").matches("éa")
    assert index.match("é灯/x") == ("lamp",)


def test_deep_addresses_do_not_recurse():
    deep = "/" + "/".join(f"s{i}" for i in range(1000))
    assert Pattern("/**").matches(deep)
    assert Pattern("/**/s999").matches(deep)
    assert Pattern("/s0/**/s500/**/s999").matches(deep)
    assert not Pattern("/**/s1000").matches(deep)
    assert Pattern(deep).matches(deep)
    assert Pattern("/" + "/".join(["*"] * 1000)).matches(deep)
    assert not Pattern("/" + "/".join(["*"] * 999)).matches(deep)
    assert Pattern("/**/s9*9").matches(deep)
    index = SubscriptionIndex()
    index.add(deep, "exact")
    index.add("/**/s999", "tail")
    index.add("/" + "/".join(["*"] * 1000), "stars")
    index.add("/" + "/".join(["**"] * 1000), "globstars")
    assert index.match(deep) == ("exact", "tail", "stars", "globstars")
    assert glob_match("/**/s999", deep)
    assert glob_match("/s0/*/**", deep)


def test_long_addresses():
    long_segment = "x" * 60_000
    address = "/a/" + long_segment
    assert Pattern("/a/*").matches(address)
    assert Pattern("/a/x*").matches(address)
    assert not Pattern("/a/y*").matches(address)
    assert Pattern("/a/" + long_segment).matches(address)
    assert glob_match("/a/*x", address)
    assert not glob_match("/a/*y", address)
    index = SubscriptionIndex()
    index.add("/a/" + long_segment, "exact")
    index.add("/a/x*x", "partial")
    index.add("/**", "all")
    assert index.match(address) == ("exact", "partial", "all")
    many_slashes = "/" * 60_000
    assert Pattern("/**").matches(many_slashes)
    assert not Pattern("/a/**").matches(many_slashes)
    assert index.match(many_slashes) == ("all",)


# -- glob_match ---------------------------------------------------------------


@pytest.mark.parametrize(
    "glob, path, expected",
    [
        ("/a/*", "/a/b", True),
        ("/a/*", "/a/b/c", False),
        ("/a/**", "/a/b/c", True),
        ("/a/**", "/a", False),
        ("/a/**/b", "/a/b", True),
        ("/a/**/b", "/a/x/y/b", True),
        ("/a/**/b", "/a/x/bb", False),
        ("/a/b**", "/a/bc/d", True),
        ("/a/x**y", "/a/xz/y", False),
        ("/a/?", "/a/b", True),
        ("/a/?", "/a//", False),
        ("/a[/]b", "/a/b", True),
        ("/a/[a-c]", "/a/b", True),
        ("/a/[!a-c]", "/a/b", False),
        ("/a/[^a-c]", "/a/d", True),
        ("/a/[]]", "/a/]", True),
        ("/a/{b,c}/d", "/a/c/d", True),
        ("/a/{b,c{d,e}}", "/a/ce", True),
        ("/a/{b,c", "/a/b", False),
        ("!/a", "/b", True),
        ("!!/a", "/a", True),
        ("/a\\", "/a", False),
        ("/a/\\t", "/a/\t", True),
        ("/a/\\q", "/a/q", True),
        ("/a/[", "/a/[", False),
        ("/" + "{a," * 11 + "b" + "}" * 11, "/a", False),  # nesting deeper than 10
        ("/{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}x", "/abababababx", True),
    ],
)
def test_glob_match_cases(glob, path, expected):
    assert glob_match(glob, path) is expected


# -- SubscriptionIndex ---------------------------------------------------------


def test_index_keys_and_order():
    index = SubscriptionIndex()
    k1 = index.add("/a/**", "one")
    k2 = index.add("/a/b", "two")
    k3 = index.add("/a/*", "three")
    k4 = index.add("/a/b", "one")  # same subscriber, second pattern
    assert len({k1, k2, k3, k4}) == 4 and all(isinstance(k, int) for k in (k1, k2, k3, k4))
    assert len(index) == 4
    assert index.match("/a/b") == ("one", "two", "three", "one")
    assert index.match_entries("/a/b") == (
        (k1, "/a/**", "one"), (k2, "/a/b", "two"), (k3, "/a/*", "three"), (k4, "/a/b", "one"))
    assert index.match("/a") == ("one",)
    assert index.match("/b") == ()
    assert k2 in index and "nope" not in index


def test_custom_keys():
    index = SubscriptionIndex()
    assert index.add("/a", "s", key=("session", 1)) == ("session", 1)
    with pytest.raises(ValueError, match="already in use"):
        index.add("/b", "s", key=("session", 1))
    # default keys skip over taken ints
    index.add("/c", "s", key=0)
    assert index.add("/d", "s") == 1
    assert index.remove(("session", 1))
    assert not index.remove(("session", 1))
    assert not index.remove("unknown")
    assert index.match("/a") == ()


def test_add_remove_re_add():
    index = SubscriptionIndex()
    key = index.add("/a/*/c", "s")
    assert index.match("/a/b/c") == ("s",)
    assert index.remove(key)
    assert index.match("/a/b/c") == ()
    assert len(index) == 0
    assert "1 nodes" in repr(index)  # the trie was pruned back to its root
    key2 = index.add("/a/*/c", "s")
    assert index.match("/a/b/c") == ("s",)
    other = index.add("/a/*/d", "t")
    index.remove(key2)
    assert index.match("/a/b/c") == ()
    assert index.match("/a/b/d") == ("t",)
    index.remove(other)
    assert "1 nodes" in repr(index)


def test_same_pattern_many_subscribers():
    index = SubscriptionIndex()
    keys = [index.add("/x/zone5*", f"s{i}") for i in range(50)]
    assert index.match("/x/zone5a") == tuple(f"s{i}" for i in range(50))
    for key in keys[::2]:
        index.remove(key)
    assert index.match("/x/zone5a") == tuple(f"s{i}" for i in range(1, 50, 2))
    assert index.match("/x/zone6") == ()


def test_discard_subscriber():
    class Session:
        def on_message(self, *args):
            pass

    alice, bob = Session(), Session()
    index = SubscriptionIndex()
    index.add("/a/**", alice)
    index.add("/a/b", bob)
    index.add("/a/*", alice)
    assert index.match("/a/b") == (alice, bob, alice)
    assert index.discard_subscriber(alice) == 2
    assert index.match("/a/b") == (bob,)
    assert index.discard_subscriber(alice) == 0
    # bound methods are new objects on each access but compare equal
    index.add("/m", bob.on_message)
    assert index.discard_subscriber(bob.on_message) == 1
    # unhashable subscribers are tracked by identity
    box, other_box = [], []
    index.add("/u", box)
    index.add("/u", other_box)
    assert index.discard_subscriber([]) == 0
    assert index.discard_subscriber(box) == 1
    assert index.match("/u") == ([],)
    assert index.match("/u")[0] is other_box


def test_clear():
    index = SubscriptionIndex()
    index.add("/a", 1)
    index.add("/**", 2)
    assert index.match("/a") == (1, 2)
    index.clear()
    assert len(index) == 0
    assert index.match("/a") == ()
    index.add("/a", 3)
    assert index.match("/a") == (3,)


def test_cache_hit_returns_the_same_tuple():
    index = SubscriptionIndex()
    index.add("/a/*", "s")
    first = index.match("/a/b")
    assert index.match("/a/b") is first
    # an equal str built at run time hits the cache too
    assert index.match("/a/" + "b") is first
    entries = index.match_entries("/a/b")
    assert index.match_entries("/a/b") is entries


def test_cache_invalidation():
    index = SubscriptionIndex()
    index.add("/a/*", "first")
    assert index.match("/a/b") == ("first",)
    second = index.add("/a/b", "second")
    assert index.match("/a/b") == ("first", "second")
    assert index.match_entries("/a/b")[1][2] == "second"
    index.remove(second)
    assert index.match("/a/b") == ("first",)
    assert len(index.match_entries("/a/b")) == 1
    index.discard_subscriber("first")
    assert index.match("/a/b") == ()
    index.add("/**", "all")
    assert index.match("/a/b") == ("all",)
    index.clear()
    assert index.match("/a/b") == ()


def test_cache_is_bounded_and_can_be_disabled():
    index = SubscriptionIndex(cache_size=2)
    assert index.cache_size == 2
    index.add("/**", "s")
    results = [index.match(f"/a/{i}") for i in range(10)]
    assert all(r == ("s",) for r in results)
    uncached = SubscriptionIndex(cache_size=0)
    uncached.add("/a/*", "s")
    first = uncached.match("/a/b")
    again = uncached.match("/a/b")
    assert first == again == ("s",) and first is not again
    with pytest.raises(ValueError):
        SubscriptionIndex(cache_size=-1)


def test_add_accepts_a_compiled_pattern():
    index = SubscriptionIndex()
    key = index.add(Pattern("/a/*"), "s")
    assert index.match("/a/b") == ("s",)
    assert index.patterns() == [(key, "/a/*", "s")]


def test_partial_segments_share_a_node_but_keep_their_glob():
    index = SubscriptionIndex()
    index.add("/x/[ab]*", "class")
    index.add("/x/a*", "prefix")
    index.add("/x/{a,c}*", "brace")
    assert index.match("/x/ab") == ("class", "prefix", "brace")
    assert index.match("/x/b1") == ("class",)
    assert index.match("/x/c1") == ("brace",)
    assert index.match("/x/[ab]") == ()


def test_subscribers_stay_alive_only_while_subscribed():
    class Subscriber:
        pass

    index = SubscriptionIndex()
    sub = Subscriber()
    key = index.add("/a", sub)
    index.match("/a")
    index.match_entries("/a")  # both caches now hold one reference each
    before = sys.getrefcount(sub)
    for _ in range(100):
        index.match("/a")
        index.match_entries("/a")
    assert sys.getrefcount(sub) == before
    uncached = SubscriptionIndex(cache_size=0)
    uncached.add("/a", sub)
    before = sys.getrefcount(sub)
    for _ in range(100):
        uncached.match("/a")
        uncached.match_entries("/a")
    assert sys.getrefcount(sub) == before
    uncached.clear()
    index.remove(key)
    index.match("/a")
    index.match_entries("/a")
    import weakref

    ref = weakref.ref(sub)
    del sub
    gc.collect()
    assert ref() is None


def test_many_partial_siblings_add_and_remove():
    index = SubscriptionIndex()
    keys = {}
    for i in range(200):
        keys[i] = index.add(f"/z/zone{i}*", i)
    index.add("/z/*one1*", "inner")
    index.add("/z/zone", "literal")
    assert index.match("/z/zone12x") == (1, 12, "inner")
    assert index.match("/z/zone") == ("literal",)
    assert index.match("/z/zon") == ()
    for i in range(0, 200, 3):
        index.remove(keys.pop(i))
    assert index.match("/z/zone12x") == (1, "inner")  # zone12* went, zone1* stays
    assert index.match("/z/zone13") == (1, 13, "inner")
    for key in list(keys.values()):
        index.remove(key)
    assert index.match("/z/zone13") == ("inner",)
    index.discard_subscriber("inner")
    index.discard_subscriber("literal")
    assert len(index) == 0 and "1 nodes" in repr(index)
