"""ClaspClient's argument checks: a bad relay URL or address is a ``ClaspError`` raised before anything
is sent, and the connection goes on working."""

from __future__ import annotations

import pickle

import pytest

from clasp_fast import AddressError, ClaspError, URLError
from clasp_fast.client import ClaspBuilder, ClaspClient, validate_url
from clasp_fast.messages import Publish, Set

from .test_client import Inbox


@pytest.mark.parametrize(
    "url, words",
    [
        ("127.0.0.1:7330", ["no scheme", "ws://127.0.0.1:7330"]),
        ("localhost:7330", ["no scheme", "ws://localhost:7330"]),
        ("http://127.0.0.1:7330", ["WebSocket", "ws://127.0.0.1:7330"]),
        ("https://relay.example.org/x", ["wss://relay.example.org/x"]),
        ("ftp://127.0.0.1:7330", ["ws:// or wss://"]),
        ("ws://127.0.0.1:99999", ["99999", "1 to 65535"]),
        ("ws://127.0.0.1:port", ["'port'", "1 to 65535"]),
        ("ws://127.0.0.1:0", ["port 0"]),
        ("ws://:7330", ["no host"]),
        (7330, ["must be a string"]),
    ],
)
async def test_a_bad_relay_url_is_a_clasp_error_naming_the_fix(url, words):
    with pytest.raises(URLError) as caught:
        await ClaspClient.connect(url, reconnect=False)
    error = caught.value
    assert isinstance(error, ClaspError) and isinstance(error, ValueError)
    assert error.url == url
    for word in words:
        assert word in str(error)
    with pytest.raises(URLError):
        await ClaspBuilder(url).connect()
    assert pickle.loads(pickle.dumps(error)).url == url


@pytest.mark.parametrize("url", ["ws://127.0.0.1:7330", "wss://relay.example.org", "ws://[::1]:7330/clasp",
                                 "WS://Host:1"])
def test_good_relay_urls_are_returned_unchanged(url):
    assert validate_url(url) == url


@pytest.mark.parametrize("address", ["no-slash", "/a//b", "", "//"])
async def test_every_sending_call_checks_its_address_like_subscribe(relay, address):
    async with await ClaspClient.connect(relay.url, name="checker") as client, \
            await ClaspClient.connect(relay.url, name="listener") as listener:
        inbox = Inbox()
        await listener.subscribe("/**", inbox)
        await listener.ping()  # the SUBSCRIBE is in place
        calls = [
            lambda: client.set(address, 1),
            lambda: client.get(address, timeout=0.5),
            lambda: client.emit(address, "x"),
            lambda: client.stream(address, [1.0, 2.0]),
            lambda: client.gesture(address, 1, "start"),
            lambda: client.publish(Publish(address, signal="event", value=1)),
            lambda: client.bundle([Set("/fine", 1), Set(address, 2)]),
        ]
        for call in calls:
            with pytest.raises(AddressError) as caught:
                await call()
            assert caught.value.address == address
        # Nothing of the above reached the relay; the connection still works.
        await client.set("/sentinel", 1)
        items = await inbox.wait_for(1)
        assert items[0][0] == "/sentinel"
        assert len(items) == 1
