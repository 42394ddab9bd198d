"""WebRTC between two processes: a child peer (tests/webrtc_peer.py) signaled over a loopback TCP stream."""

from __future__ import annotations

import asyncio

from clasp_fast.messages import Set

from .webrtc_peer import loopback_config, read_result, spawn_peer


async def test_messages_cross_between_processes_both_ways() -> None:
    async with spawn_peer("echo", "--count", "300", "--seconds", "10") as (transport, process):
        assert transport.batching
        for i in range(300):
            await transport.sender.send(Set(address="/echo", value=i))
        echoed = []

        async def take_300() -> None:
            async for message in transport.receiver:
                echoed.append(message.value)
                if len(echoed) == 300:
                    return

        await asyncio.wait_for(take_300(), 15)
        assert echoed == list(range(300))
        result = await read_result(process)
        assert result["received"] == 300


async def test_remote_process_killed_mid_stream_is_noticed_within_the_keepalive_timeout() -> None:
    timeout, interval = 1.0, 0.2
    config = loopback_config(keepalive_interval=interval, keepalive_timeout=timeout)
    child_args = ("--count", "1000000", "--seconds", "20", "--keepalive-interval", str(interval),
                  "--keepalive-timeout", "5")
    async with spawn_peer("stream", *child_args, config=config) as (transport, process):
        received = 0

        async def take_200() -> None:
            nonlocal received
            async for _ in transport.receiver:
                received += 1
                if received == 200:
                    return

        await asyncio.wait_for(take_200(), 15)
        states: list[str] = []
        transport.add_state_listener(states.append)
        process.kill()
        # The keepalive notices (close reason "timeout"), long before ICE consent expiry would;
        # the bound is a liveness check, not a measurement.
        await asyncio.wait_for(transport.wait_closed(), timeout + 5)
        assert transport.close_reason == "timeout"
        assert states == ["closing", "closed"]
        assert transport.state == "closed"
        # The receiver drains what arrived before the loss, then ends.
        async def drain() -> None:
            async for _ in transport.receiver:
                pass

        await asyncio.wait_for(drain(), 5)
