"""One process of a benchmark run: ``python -m clasp_fast.bench.worker ROLE ...``.

Roles: ``relay`` (the embedded relay), ``sender`` and ``receiver`` (the two peers of one path), and
the stream scenarios' roles (:mod:`clasp_fast.bench.stream_roles`).
The runner talks to a worker with JSON lines: commands on the worker's stdin, events on its
stdout (logging goes to stderr). When stdin closes the worker exits at once, so a worker never
outlives its runner. SIGINT is ignored: the runner decides when its workers stop.

Every measured message is the same PUBLISH (event) to ``/bench/data`` whose bytes value starts
with the sender's ``time.time_ns()`` (8 bytes), the phase number (1 byte) and a sequence number
(4 bytes), padded to ``--size`` bytes. The receiver subtracts the stamp from its own
``time.time_ns()``: one-way latency on a clock both processes share (same host, or two network
namespaces of one host).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import struct
import sys
import time
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from clasp_fast.bench.paths import ADDRESS, EVENT_LOOPS, HEADER_SIZE, PATHS, PATTERN
from clasp_fast.bench.stats import cpu_seconds

T = TypeVar("T")

# A send waits while this many bytes are queued: the backlog left when a phase ends stays small.
SEND_HIGH_WATER = 128 * 1024
YIELD_EVERY = 64  # full-speed sending lets the event loop run after this many messages


_HEADER = struct.Struct(">QBI")  # stamp, phase, sequence: HEADER_SIZE bytes
_PAYLOADS: dict[int, struct.Struct] = {}


def payload_packer(size: int) -> Callable[[int, int, int], bytes]:
    """``pack(stamp_ns, phase, sequence)``: the value of one measured message of ``size`` bytes
    (the header, then zero padding), in one call: the bench measures the library, not its own loop."""
    layout = _PAYLOADS.get(size)
    if layout is None:
        layout = _PAYLOADS[size] = struct.Struct(f">QBI{size - HEADER_SIZE}x")
    return layout.pack


def make_payload(size: int, phase: int, sequence: int) -> bytes:
    """The value of one measured message: stamp, phase, sequence, zero padding to ``size``."""
    return payload_packer(size)(time.time_ns(), phase, sequence & 0xFFFFFFFF)


def read_payload(value: object, _unpack=_HEADER.unpack_from) -> tuple[int, int] | None:
    """``(stamp_ns, phase)`` of a measured message's value, or None for anything else."""
    if type(value) is not bytes or len(value) < HEADER_SIZE:
        return None
    stamp, phase, _ = _unpack(value)
    return stamp, phase


class Control:
    """The JSON-lines link to the runner: ``emit`` events, ``next_command`` reads stdin."""

    def __init__(self) -> None:
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._task = loop.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                # The runner is gone (or closed our stdin): leave now, whatever is running.
                sys.stdout.flush()
                os._exit(0)
            self.commands.put_nowait(json.loads(line))

    async def next_command(self) -> dict[str, Any]:
        return await self.commands.get()

    @staticmethod
    def emit(event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
        sys.stdout.flush()


# -- relay ----------------------------------------------------------------------------------

async def run_relay(args: argparse.Namespace, control: Control) -> None:
    from clasp_fast.relay import Relay

    relay = await Relay.start(host=args.host, port=0, queue_size=args.queue_size, max_sessions=1000)
    control.emit("ready", url=relay.url, cpu_s=cpu_seconds())
    try:
        while True:
            command = await control.next_command()
            if command["cmd"] == "stop":
                break
            if command["cmd"] == "cpu":
                control.emit("cpu", cpu_s=cpu_seconds())
    finally:
        await relay.close()
    control.emit("done", cpu_s=cpu_seconds())


# -- peers ----------------------------------------------------------------------------------

def webrtc_config(args: argparse.Namespace):
    from clasp_fast.webrtc import WebRtcConfig

    return WebRtcConfig(
        host_addresses=[args.host_address],
        batching=args.path != "p2p_unbatched",
        fast_sctp=args.path != "p2p_stock_sctp",
        fast_dtls=args.path not in ("p2p_no_plane", "p2p_no_dtls"),
        udp_batching=args.path != "p2p_no_plane",
        high_water_mark=SEND_HIGH_WATER,
        connection_timeout=args.timeout,
        busy_poll=args.busy_poll,
        yield_to_local_peer=not args.no_local_yield,
    )


class Arrivals:
    """What the receiver saw, per phase: count, first/last arrival and one-way latencies."""

    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.first_ns: dict[int, int] = {}
        self.last_ns: dict[int, int] = {}
        self.latencies: dict[int, list[int]] = {}
        self.keep_latencies: set[int] = set()
        self.changed = asyncio.Event()

    def on_value(self, value: object, _now=time.time_ns, _unpack=_HEADER.unpack_from) -> None:
        # Runs once per received message: kept cheap, as the sender's payload_packer is.
        if type(value) is not bytes or len(value) < HEADER_SIZE:
            return
        now = _now()
        phase = value[8]
        count = self.count
        if phase in count:
            count[phase] += 1
        else:
            count[phase] = 1
            self.first_ns[phase] = now
        self.last_ns[phase] = now
        if phase in self.keep_latencies:
            self.latencies.setdefault(phase, []).append(now - _unpack(value)[0])
        self.changed.set()

    async def wait_for(self, phase: int, expected: int, idle: float, timeout: float) -> None:
        """Until ``expected`` messages of ``phase`` arrived, nothing arrived for ``idle`` s, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.count.get(phase, 0) < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(idle, remaining))
            except asyncio.TimeoutError:
                return


async def run_receiver(args: argparse.Namespace, control: Control) -> None:
    from clasp_fast.client import ClaspClient

    arrivals = Arrivals()
    client = await ClaspClient.connect(args.relay, name="bench receiver", reconnect=False,
                                       connect_timeout=args.timeout)
    transport = None
    connecting = None
    try:
        if args.path == "relay":
            await client.subscribe(PATTERN, lambda value, address: arrivals.on_value(value))
            await client.ping(args.timeout)  # SUBSCRIBE has no reply: the PONG proves it was processed
        else:
            from clasp_fast.webrtc import WebRtcTransport

            connecting = asyncio.ensure_future(
                WebRtcTransport.connect(webrtc_config(args), client.signaling, role="answerer"))
        control.emit("ready", session=client.session_id, cpu_s=cpu_seconds())
        if connecting is not None:
            sender, receiver = await connecting
            transport = sender.transport
            on_value = arrivals.on_value
            receiver.on_message(lambda message: on_value(getattr(message, "value", None)))
        control.emit("connected", cpu_s=cpu_seconds())
        while True:
            command = await control.next_command()
            cmd = command["cmd"]
            if cmd == "stop":
                break
            if cmd == "keep_latencies":
                arrivals.keep_latencies.add(command["phase"])
                control.emit("ok")
            elif cmd == "collect":
                phase = command["phase"]
                await arrivals.wait_for(phase, command["sent"], command["idle"], command["timeout"])
                control.emit(
                    "collected",
                    phase=phase,
                    received=arrivals.count.get(phase, 0),
                    first_ns=arrivals.first_ns.get(phase),
                    last_ns=arrivals.last_ns.get(phase),
                    latencies_ns=arrivals.latencies.pop(phase, []),
                    cpu_s=cpu_seconds(),
                )
    finally:
        if connecting is not None and not connecting.done():
            connecting.cancel()
        if transport is not None:
            await asyncio.wait_for(transport.close(), 5)
        await client.close()
    control.emit("done", cpu_s=cpu_seconds())


async def run_sender(args: argparse.Namespace, control: Control) -> None:
    from clasp_fast.client import ClaspClient
    from clasp_fast.codec import encode
    from clasp_fast.messages import Publish

    frame_bytes = len(encode(Publish(address=ADDRESS, signal="event", value=bytes(args.size))))
    signaling_client = await ClaspClient.connect(args.relay, name="bench sender signaling",
                                                 reconnect=False, connect_timeout=args.timeout)
    control.emit("ready", frame_bytes=frame_bytes, cpu_s=cpu_seconds())
    client = None
    transport = None
    try:
        command = await control.next_command()
        if command["cmd"] != "connect":
            return
        started = time.perf_counter()
        send_group = None
        send_one: Callable[..., Awaitable[None]]
        reliable: bool | None
        if args.path == "relay":
            # The relay path's set-up: a fresh WebSocket connection with the HELLO/WELCOME handshake.
            client = await ClaspClient.connect(args.relay, name="bench sender", reconnect=False,
                                               connect_timeout=args.timeout)
            setup_s = time.perf_counter() - started
            send_one = client.publish
            reliable = None
        else:
            from clasp_fast.webrtc import WebRtcTransport

            sender, _ = await WebRtcTransport.connect(webrtc_config(args), signaling_client.signaling,
                                                      peer=command["peer"])
            transport = sender.transport
            # Offer sent to every channel open (certificate generation happens before and is excluded).
            setup_s = transport.timings["connected"]
            # The sender's own coroutine, called directly (send_phase passes ``reliable``).
            send_one = sender.send
            reliable = args.path != "p2p_unreliable"
            if args.path == "p2p_send_many":
                send_group = functools.partial(sender.send_many, reliable=True)

        control.emit("connected", setup_ms=setup_s * 1000.0, cpu_s=cpu_seconds())
        while True:
            command = await control.next_command()
            if command["cmd"] == "stop":
                break
            if command["cmd"] == "phase":
                before = transport.stats() if transport is not None else None
                recovery_before = sctp_recovery(transport)
                result = await send_phase(send_one, args.size, command, send_group, reliable=reliable)
                if transport is not None:
                    assert before is not None
                    transport.sender.flush()
                    after = transport.stats()
                    # Frames per DataChannel message: 1 when unbatched, more when batching packed them.
                    messages = after.datachannel_messages_sent - before.datachannel_messages_sent
                    result["datachannel_messages"] = messages
                    result["frames_per_datachannel_message"] = (
                        round((after.messages_sent - before.messages_sent) / messages, 2) if messages else None)
                recovery_after = sctp_recovery(transport)
                if recovery_before is not None and recovery_after is not None:
                    result["sctp_retransmissions"] = recovery_after[0] - recovery_before[0]
                    result["sctp_loss_probes"] = recovery_after[1] - recovery_before[1]
                control.emit("sent", **result, cpu_s=cpu_seconds())
    finally:
        if transport is not None:
            await asyncio.wait_for(transport.close(), 5)
        if client is not None:
            await client.close()
        await signaling_client.close()
    control.emit("done", cpu_s=cpu_seconds())


def sctp_recovery(transport) -> tuple[int, int] | None:
    """The sender's SCTP retransmissions and loss probes so far (None: relay path, or aiortc's SCTP)."""
    if transport is None:
        return None
    stats = getattr(transport.peer_connection.sctp, "stats", None)
    return None if stats is None else (stats.retransmissions, stats.loss_probes)


async def send_phase(send_one, size: int, command: dict[str, Any], send_group=None, *,
                     reliable: bool | None = None) -> dict[str, Any]:
    """Send one phase: as fast as possible (``rate`` 0) or paced at ``rate`` messages/s.

    Bounded by ``max_count`` messages and ``duration`` seconds, whichever comes first (at full
    speed the clock is read once per YIELD_EVERY messages). With ``send_group`` (a ``send_many``),
    the messages go in groups: YIELD_EVERY at full speed, those due at once when paced.
    ``reliable``: passed to ``send_one`` (a P2P sender's ``send``; None: the relay client's
    ``publish``, called with the message alone), so no wrapper of the bench's runs per message.
    """
    from clasp_fast.messages import Publish

    phase, target_rate = command["phase"], command["rate"]
    duration, max_count = command["duration"], command["max_count"]
    sleep = asyncio.sleep
    now = time.perf_counter
    pack, stamp = payload_packer(size), time.time_ns  # make_payload(), written out
    # uvloop rounds a timer to whole milliseconds, a wait under 0.5 ms to none: the paced sender
    # would spin until its next message is due and take a core from the processes it measures.
    # asyncio waits at least 1 ms for such a timer already (epoll's time-out rounds up).
    shortest_wait = 0.001 if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else 0.0
    sent = 0
    first_ns = time.time_ns()
    started = now()
    while sent < max_count:
        elapsed = now() - started
        if elapsed >= duration:
            break
        # The messages to send before the loop may run: YIELD_EVERY at full speed, else those due.
        due = min(max_count, sent + YIELD_EVERY if target_rate <= 0 else int(elapsed * target_rate) + 1)
        if send_group is not None and sent < due:
            await send_group([Publish(address=ADDRESS, signal="event",
                                      value=pack(stamp(), phase, sequence & 0xFFFFFFFF))
                              for sequence in range(sent, due)])
            sent = due
        while sent < due:
            message = Publish(address=ADDRESS, signal="event", value=pack(stamp(), phase, sent & 0xFFFFFFFF))
            if reliable is None:
                await send_one(message)
            else:
                await send_one(message, reliable=reliable)
            sent += 1
        if target_rate <= 0:
            await sleep(0)
        else:
            delay = started + sent / target_rate - now()
            await sleep(max(delay, shortest_wait) if delay > 0 else 0)
    return {"phase": phase, "sent": sent, "seconds": now() - started, "first_ns": first_ns}


# -- entry point ----------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m clasp_fast.bench.worker")
    parser.add_argument("role", choices=("relay", "sender", "receiver", "conflation-sender", "conflation-receiver",
                                         "fanout-hub", "fanout-viewers"))
    parser.add_argument("--path", choices=PATHS, default="p2p_batched")
    parser.add_argument("--relay", help="relay URL (sender, receiver)")
    parser.add_argument("--host", default="127.0.0.1", help="relay: address to listen on")
    parser.add_argument("--queue-size", type=int, default=100_000, help="relay: frames queued per session")
    parser.add_argument("--host-address", default="127.0.0.1", help="peers: the only ICE host address")
    parser.add_argument("--size", type=int, default=32, help="payload bytes per message")
    parser.add_argument("--timeout", type=float, default=20.0, help="connection time-outs (s)")
    parser.add_argument("--viewers", type=int, default=1, help="fanout-viewers: viewers in this process")
    parser.add_argument("--name", default="v", help="fanout-viewers: name prefix of its viewers")
    parser.add_argument("--loop", choices=EVENT_LOOPS, default="asyncio", help="the event loop to run on")
    parser.add_argument("--busy-poll", type=float, default=0.0, help="peers: WebRtcConfig.busy_poll (s)")
    parser.add_argument("--no-local-yield", action="store_true",
                        help="peers: WebRtcConfig.yield_to_local_peer=False")
    args = parser.parse_args(argv)
    if args.size < HEADER_SIZE:
        parser.error(f"--size must be at least {HEADER_SIZE} bytes (stamp, phase and sequence)")
    if args.role != "relay" and not args.relay:
        parser.error(f"the {args.role} needs --relay URL")
    return args


async def amain(args: argparse.Namespace) -> None:
    control = Control()
    await control.start()
    runner = {"relay": run_relay, "sender": run_sender, "receiver": run_receiver}.get(args.role)
    if runner is None:
        from clasp_fast.bench.stream_roles import ROLES

        runner = ROLES[args.role]
    try:
        await runner(args, control)
    except Exception as exc:
        control.emit("error", message=f"{type(exc).__name__}: {exc}")
        raise


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = parse_args(argv)
    try:
        run_on_loop(amain(args), args.loop)
    except Exception:
        return 1
    return 0


def run_on_loop(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` to completion on a new event loop of the kind named (one of EVENT_LOOPS)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    if loop != "asyncio":
        main.close()
        raise ValueError(f"unknown event loop {loop!r}; choose from {', '.join(EVENT_LOOPS)}")
    return asyncio.run(main)


if __name__ == "__main__":
    sys.exit(main())
