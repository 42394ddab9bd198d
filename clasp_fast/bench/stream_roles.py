"""Worker roles of the stream scenarios (``conflation``, ``p2p_fanout``), run by
``python -m clasp_fast.bench.worker ROLE``; the runner's side is :mod:`clasp_fast.bench.scenarios`.

``conflation-sender`` / ``conflation-receiver``: one P2P connection; the sender sends SETs to
``/bench/c/{i % addresses}`` at ``rate`` per second, each value stamped as the paths' payloads are,
then one STOP event; the receiver's handler takes ``handle_ms`` per update (throttled in the
receiver, not the network), behind a latest-value queue (``conflate``) or a plain FIFO, and records
the age of each update it takes until the STOP arrives.

``fanout-hub`` / ``fanout-viewers``: one hub and ``viewers`` viewers per viewer process; each viewer
is a P2P connection to the hub plus a relay subscription to ``/bench/**``. The hub sends the paths'
``/bench/data`` event to the first R viewers through a :class:`~clasp_fast.fanout.FanoutGroup`
(encode once), or publishes it through the relay, as fast as it is taken, for ``duration``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Callable

from clasp_fast.bench.paths import ADDRESS, HEADER_SIZE, PATTERN
from clasp_fast.bench.stats import cpu_seconds, percentile

CONFLATION_PREFIX = "/bench/c"
STOP_ADDRESS = "/bench/stop"


def _stamped(size: int, phase: int, sequence: int) -> bytes:
    head = time.time_ns().to_bytes(8, "big") + bytes((phase,)) + (sequence & 0xFFFFFFFF).to_bytes(4, "big")
    return head + bytes(max(0, size - HEADER_SIZE))


def stream_config(args):
    """The scenarios' WebRTC options: loopback (or the namespace's address), default data path."""
    from clasp_fast.webrtc import WebRtcConfig

    return WebRtcConfig(host_addresses=[args.host_address],
                        connection_timeout=args.timeout)


def _ages_ms(ages_ns: list[int]) -> dict[str, float | None]:
    ordered = sorted(ages_ns)
    return {q: (None if not ordered else round(percentile(ordered, f) / 1e6, 3))
            for q, f in (("p50", 50), ("p90", 90), ("p99", 99))}


class _Fifo:
    """The unconflated receiver: every update waits its turn in a plain queue."""

    def __init__(self, handler: Callable[[Any], Any]) -> None:
        self.handler = handler
        self.queue: deque[object] = deque()
        self.task: asyncio.Task[None] | None = None
        self.conflated = 0

    def __call__(self, message: object) -> None:
        self.queue.append(message)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.queue:
                await self.handler(self.queue.popleft())
        finally:
            self.task = None

    async def close(self) -> None:
        self.queue.clear()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass


class _ConflationPhase:
    """What the receiver measures in one phase."""

    def __init__(self, phase: int, handle_s: float) -> None:
        self.phase = phase
        self.handle_s = handle_s
        self.ages_ns: list[int] = []
        self.stopped = asyncio.Event()
        self.received = 0

    async def handle(self, message: Any) -> None:
        if self.stopped.is_set():
            return
        value = getattr(message, "value", None)
        if isinstance(value, bytes) and len(value) >= HEADER_SIZE and value[8] == self.phase:
            self.ages_ns.append(time.time_ns() - int.from_bytes(value[:8], "big"))
        await asyncio.sleep(self.handle_s)  # the slow application


async def run_conflation_receiver(args, control) -> None:
    from clasp_fast.client import ClaspClient
    from clasp_fast.conflation import ConflationPolicy
    from clasp_fast.webrtc import WebRtcTransport

    client = await ClaspClient.connect(args.relay, name="bench conflation receiver", reconnect=False,
                                       connect_timeout=args.timeout)
    transport = None
    current: _ConflationPhase | None = None
    queue: Any = None
    try:
        connecting = asyncio.ensure_future(WebRtcTransport.connect(stream_config(args), client.signaling,
                                                                   role="answerer"))
        control.emit("ready", session=client.session_id, cpu_s=cpu_seconds())
        sender, receiver = await connecting
        transport = sender.transport

        def on_message(message: Any) -> None:
            if current is None:
                return
            if getattr(message, "address", None) == STOP_ADDRESS:
                if getattr(message, "value", None) == current.phase:
                    current.stopped.set()
                return
            current.received += 1
            queue(message)

        receiver.on_message(on_message)
        control.emit("connected", cpu_s=cpu_seconds())
        while True:
            command = await control.next_command()
            cmd = command["cmd"]
            if cmd == "stop":
                break
            if cmd == "mode":
                if queue is not None:
                    await queue.close()
                current = _ConflationPhase(command["phase"], command["handle_ms"] / 1000.0)
                if command["conflate"]:
                    from clasp_fast.conflation import ConflatingHandler

                    queue = ConflatingHandler(current.handle, ConflationPolicy(f"{CONFLATION_PREFIX}/**"))
                else:
                    queue = _Fifo(current.handle)
                control.emit("ok")
            elif cmd == "collect":
                assert current is not None
                try:
                    await asyncio.wait_for(current.stopped.wait(), command["timeout"])
                except asyncio.TimeoutError:
                    pass
                current.stopped.set()
                ages = current.ages_ns
                third = max(1, len(ages) // 3)
                control.emit("collected", phase=current.phase, received=current.received, handled=len(ages),
                             conflated=queue.conflated, stopped=True,
                             age_ms=_ages_ms(ages), age_first_third_ms=_ages_ms(ages[:third])["p50"],
                             age_last_third_ms=_ages_ms(ages[-third:])["p50"], cpu_s=cpu_seconds())
    finally:
        if queue is not None:
            await queue.close()
        if transport is not None:
            await asyncio.wait_for(transport.close(), 5)
        await client.close()
    control.emit("done", cpu_s=cpu_seconds())


async def run_conflation_sender(args, control) -> None:
    from clasp_fast.client import ClaspClient
    from clasp_fast.messages import Publish, Set
    from clasp_fast.webrtc import WebRtcTransport

    client = await ClaspClient.connect(args.relay, name="bench conflation sender", reconnect=False,
                                       connect_timeout=args.timeout)
    control.emit("ready", frame_bytes=0, cpu_s=cpu_seconds())
    transport = None
    try:
        command = await control.next_command()
        if command["cmd"] != "connect":
            return
        sender, _ = await WebRtcTransport.connect(stream_config(args), client.signaling, peer=command["peer"])
        transport = sender.transport
        control.emit("connected", setup_ms=transport.timings["connected"] * 1000.0, cpu_s=cpu_seconds())
        while True:
            command = await control.next_command()
            if command["cmd"] == "stop":
                break
            if command["cmd"] != "phase":
                continue
            phase, rate, duration = command["phase"], command["rate"], command["duration"]
            addresses, max_count = command["addresses"], command["max_count"]
            started = time.perf_counter()
            sent = 0
            while sent < max_count:
                elapsed = time.perf_counter() - started
                if elapsed >= duration:
                    break
                due = min(max_count, int(elapsed * rate) + 1)
                while sent < due:
                    await sender.send(Set(address=f"{CONFLATION_PREFIX}/{sent % addresses}",
                                          value=_stamped(args.size, phase, sent)))
                    sent += 1
                delay = started + sent / rate - time.perf_counter()
                await asyncio.sleep(delay if delay > 0 else 0)
            seconds = time.perf_counter() - started
            await sender.send(Publish(address=STOP_ADDRESS, signal="event", value=phase))
            sender.flush()
            control.emit("sent", phase=phase, sent=sent, seconds=seconds, cpu_s=cpu_seconds())
    finally:
        if transport is not None:
            await asyncio.wait_for(transport.close(), 5)
        await client.close()
    control.emit("done", cpu_s=cpu_seconds())


class _Viewer:
    """One viewer: its relay client (signaling and the relay leg) and its P2P endpoint."""

    def __init__(self, name: str, client: Any, p2p: Any) -> None:
        self.name = name
        self.client = client
        self.p2p = p2p
        self.count: dict[int, int] = {}
        self.last_ns: dict[int, int] = {}

    def on_value(self, value: object, address: str) -> None:
        if isinstance(value, bytes) and len(value) >= HEADER_SIZE:
            step = value[8]
            self.count[step] = self.count.get(step, 0) + 1
            self.last_ns[step] = time.time_ns()


async def run_fanout_viewers(args, control) -> None:
    from clasp_fast.client import ClaspClient
    from clasp_fast.p2p import ClaspP2P, StaticDiscovery

    viewers: list[_Viewer] = []
    try:
        for i in range(args.viewers):
            client = await ClaspClient.connect(args.relay, name=f"bench viewer {args.name}-{i}", reconnect=False,
                                               connect_timeout=args.timeout)
            p2p = ClaspP2P(client, client_id=f"{args.name}-{i}", rtc_config=stream_config(args),
                           discovery=StaticDiscovery())
            viewer = _Viewer(f"{args.name}-{i}", client, p2p)
            viewers.append(viewer)
            await p2p.connect()
            await client.subscribe(PATTERN, viewer.on_value)
            await client.ping(args.timeout)  # SUBSCRIBE has no reply: the PONG proves it was processed
        control.emit("ready", sessions=[v.client.session_id for v in viewers], cpu_s=cpu_seconds())
        for viewer in viewers:
            peer = await asyncio.wait_for(anext(aiter(viewer.p2p.incoming())), args.timeout * 3)
            peer.on(PATTERN, viewer.on_value)
        control.emit("connected", cpu_s=cpu_seconds())
        while True:
            command = await control.next_command()
            if command["cmd"] == "stop":
                break
            if command["cmd"] == "collect":
                step, idle, deadline = command["step"], command["idle"], time.monotonic() + command["timeout"]
                last = -1
                while time.monotonic() < deadline:  # until nothing more arrives for ``idle`` s
                    total = sum(v.count.get(step, 0) for v in viewers)
                    if total == last:
                        break
                    last = total
                    await asyncio.sleep(idle)
                control.emit("collected", step=step,
                             viewers={v.name: [v.count.get(step, 0), v.last_ns.get(step)] for v in viewers})
    finally:
        for viewer in viewers:
            await asyncio.wait_for(viewer.p2p.close(), 10)
            await viewer.client.close()
    control.emit("done", cpu_s=cpu_seconds())


async def run_fanout_hub(args, control) -> None:
    from clasp_fast.client import ClaspClient
    from clasp_fast.messages import Publish
    from clasp_fast.p2p import ClaspP2P, StaticDiscovery

    client = await ClaspClient.connect(args.relay, name="bench fan-out hub", reconnect=False,
                                       connect_timeout=args.timeout)
    p2p = ClaspP2P(client, client_id="bench-hub", rtc_config=stream_config(args), discovery=StaticDiscovery())
    await p2p.connect()
    control.emit("ready", cpu_s=cpu_seconds())
    try:
        command = await control.next_command()
        if command["cmd"] != "connect":
            return
        names = command["peers"]
        for session in names:
            await p2p.connect_to_peer(session, timeout=args.timeout)
        group = p2p.group(names)  # encode once, a lane per viewer
        control.emit("connected", cpu_s=cpu_seconds())
        while True:
            command = await control.next_command()
            if command["cmd"] == "stop":
                break
            if command["cmd"] != "step":
                continue
            step, duration, max_count = command["step"], command["duration"], command["max_count"]
            to = names[:command["receivers"]]
            sent = 0
            first_ns = time.time_ns()
            started = time.perf_counter()
            deadline = started + duration
            if command["route"] == "relay":
                while sent < max_count and time.perf_counter() < deadline:
                    await client.publish(Publish(address=ADDRESS, signal="event",
                                                 value=_stamped(args.size, step, sent)))
                    sent += 1
                    if sent % 64 == 0:
                        await asyncio.sleep(0)
            else:
                while sent < max_count and time.perf_counter() < deadline:
                    group.send(Publish(address=ADDRESS, signal="event", value=_stamped(args.size, step, sent)), to=to)
                    sent += 1
                    if sent % 64 == 0:
                        await asyncio.sleep(0)
                        while group.waiting() > 256 and time.perf_counter() < deadline:
                            await asyncio.sleep(0.001)  # the slowest lane holds frames: let it drain
                group.flush()
            control.emit("sent", step=step, sent=sent, first_ns=first_ns, seconds=time.perf_counter() - started,
                         frames_encoded=group.frames_encoded, cpu_s=cpu_seconds())
    finally:
        await asyncio.wait_for(p2p.close(), 15)
        await client.close()
    control.emit("done", cpu_s=cpu_seconds())


ROLES = {
    "conflation-sender": run_conflation_sender,
    "conflation-receiver": run_conflation_receiver,
    "fanout-hub": run_fanout_hub,
    "fanout-viewers": run_fanout_viewers,
}
