"""What a WebRTC transport is configured with and reports: options, channel specs, labels, stats."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from aiortc import RTCConfiguration, RTCIceServer

from .. import ice
from ...clock import PeerClock, wall_clock_us
from ...conflation import ConflationPolicy, Fence
from ...wire.protocol import BATCH_FEATURE, CLOCK_FEATURE, KEEPALIVE_FEATURE

__all__ = [
    "CONTROL_CHANNEL_ID",
    "CONTROL_LABEL",
    "DEFAULT_CHANNELS",
    "LOCAL_FEATURES",
    "RELIABLE_LABEL",
    "SCTP_USER_DATA_MAX",
    "UNRELIABLE_LABEL",
    "CandidatePairInfo",
    "ChannelSpec",
    "State",
    "WebRtcConfig",
    "WebRtcStats",
]

UNRELIABLE_LABEL = "clasp"
RELIABLE_LABEL = "clasp-reliable"
CONTROL_LABEL = "clasp-control"
# Negotiated stream id of the control channel (both sides create it; no DCEP exchange).
CONTROL_CHANNEL_ID = 1023

# User data in one SCTP DATA chunk in aiortc 1.16: (1189 - 12 - 16) // 4 * 4 (rtcsctptransport.py).
SCTP_USER_DATA_MAX = 1160

#: What this transport offers in its offer and answer.
LOCAL_FEATURES = (BATCH_FEATURE, KEEPALIVE_FEATURE, CLOCK_FEATURE)

State = Literal["new", "connecting", "connected", "closing", "closed", "failed"]


@dataclass(frozen=True)
class ChannelSpec:
    """A DataChannel and the messages it carries.

    ``prefix`` routes messages whose address is the prefix or lies under it to this channel
    (the longest matching prefix wins). Reliability: the defaults are ordered and fully reliable;
    ``ordered=False, max_retransmits=0`` is unreliable; ``max_retransmits=N`` or
    ``max_packet_life_time=ms`` is partially reliable. ``conflate``: address patterns whose SETs
    and stream PUBLISHes are conflated on this channel while it is backed up (docs/streams.md).
    """

    label: str
    prefix: str | None = None
    ordered: bool = True
    max_retransmits: int | None = None
    max_packet_life_time: int | None = None
    conflate: tuple[str, ...] = ()

    @property
    def reliable(self) -> bool:
        return self.max_retransmits is None and self.max_packet_life_time is None

    def __post_init__(self) -> None:
        if self.max_retransmits is not None and self.max_packet_life_time is not None:
            raise ValueError(f"channel {self.label!r}: give max_retransmits or max_packet_life_time, not both")
        if self.prefix is not None and not self.prefix.startswith("/"):
            raise ValueError(f"channel {self.label!r}: prefix must start with '/', got {self.prefix!r}")
        if isinstance(self.conflate, str):
            object.__setattr__(self, "conflate", (self.conflate,))
        if self.conflate:
            ConflationPolicy(self.conflate)  # a bad pattern fails here, naming it

    def policy(self) -> ConflationPolicy | None:
        """The conflation policy of this channel (None: nothing is conflated)."""
        return ConflationPolicy(self.conflate) if self.conflate else None


DEFAULT_CHANNELS = (
    ChannelSpec(UNRELIABLE_LABEL, ordered=False, max_retransmits=0),
    ChannelSpec(RELIABLE_LABEL),
)


@dataclass
class WebRtcConfig:
    """Options of a WebRTC transport.

    ``ice_servers``: STUN/TURN URLs (``"stun:host:3478"``) or ``{"urls", "username", "credential"}``
    maps (the browser's RTCIceServer shape); none by default, so nothing is sent off the machine.
    ``host_addresses``: the only addresses host candidates are gathered on (``["127.0.0.1"]`` keeps a
    connection on loopback); None gathers on every non-loopback interface as aioice does.
    ``udp_receive_buffer``: ``SO_RCVBUF`` of the ICE sockets (None keeps aioice's 256 KiB).
    ``conflate``: address patterns conflated on the two default channels while they are backed up
    (more than ``conflation_threshold`` bytes waiting in aiortc); ``conflation_fence``: see
    :class:`~clasp_fast.conflation.LatestValueQueue`. ``clock_sync``: offer the ``"clock"`` feature
    (a continuous clock estimate over the control channel); ``clock``: the µs clock it reads.
    ``busy_poll``: seconds the event loop keeps polling instead of sleeping after the last DataChannel
    message sent or received (:mod:`clasp_fast.runtime.busy_poll`): lower latency for the CPU of one
    core while traffic flows; 0 (the default) lets the loop sleep.
    """

    ice_servers: list[str | dict[str, Any]] = field(default_factory=list)
    host_addresses: list[str] | None = None
    udp_receive_buffer: int | None = ice.DEFAULT_UDP_RECEIVE_BUFFER
    extra_channels: list[ChannelSpec] = field(default_factory=list)
    # Batching toward peers that advertise "batch".
    batching: bool = True
    max_batch_size: int = 16 * 1024
    unreliable_batch_size: int = SCTP_USER_DATA_MAX
    # Frames keep accumulating while a channel has more than this many bytes waiting in aiortc.
    batch_flush_threshold: int = 0
    # Backpressure: a send waits (or fails, backpressure="fail") above this many buffered bytes.
    high_water_mark: int = 1024 * 1024
    backpressure: Literal["wait", "fail"] = "wait"
    connection_timeout: float = 30.0
    keepalive_interval: float = 1.0
    keepalive_timeout: float = 5.0
    close_timeout: float = 2.0
    # Our close resets the streams once the peer's SCTP acknowledged our data and has sent nothing
    # new for this long (at least two round trips): Chromium acknowledges data before its
    # DataChannel has it, drops what a stream reset overtakes and discards what it has not started
    # sending when its stream is reset (docs/p2p-lifecycle.md). Within close_timeout.
    reset_delay: float = 0.1
    receive_queue_limit: int = 100_000
    # Data channels over clasp_fast.sctp's bundling data path; False keeps aiortc's own SCTP.
    fast_sctp: bool = True
    # Seam (data plane, docs/data-plane.md): with fast_sctp, the compiled DTLS record layer
    # (fast_dtls) and many UDP datagrams per system call (udp_batching).
    fast_dtls: bool = True
    udp_batching: bool = True
    # With fast_sctp: after a message that leaves at once to a peer on this host, give the CPU up
    # so the receiving process runs first (docs/data-plane.md).
    yield_to_local_peer: bool = True
    # Latest-value conflation of the default channels (docs/streams.md).
    conflate: list[str] = field(default_factory=list)
    conflation_fence: Fence = "address"
    conflation_threshold: int = 16 * 1024
    # Non-conflatable messages a conflating channel keeps waiting behind its values before sends wait.
    conflation_max_kept: int = 4096
    # The peer's clock over the control channel (SYNC instead of PING between peers offering "clock").
    clock_sync: bool = True
    clock: Callable[[], int] = wall_clock_us
    busy_poll: float = 0.0

    def __post_init__(self) -> None:
        if self.backpressure not in ("wait", "fail"):
            raise ValueError(f"backpressure must be 'wait' or 'fail', got {self.backpressure!r}")
        if not 0 < self.unreliable_batch_size <= SCTP_USER_DATA_MAX:
            raise ValueError(
                f"unreliable_batch_size must be 1..{SCTP_USER_DATA_MAX} (one SCTP packet), "
                f"got {self.unreliable_batch_size}"
            )
        if self.max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be positive, got {self.max_batch_size}")
        for name in ("connection_timeout", "keepalive_interval", "keepalive_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not (0 <= self.busy_poll and math.isfinite(self.busy_poll)):
            raise ValueError(f"busy_poll must be 0 (off) or a positive number of seconds, got {self.busy_poll!r}")
        if not 0 <= self.reset_delay < self.close_timeout:
            raise ValueError(f"reset_delay must be 0 or more and below close_timeout, got {self.reset_delay}")
        if self.keepalive_timeout <= self.keepalive_interval:
            raise ValueError("keepalive_timeout must be longer than keepalive_interval")
        if isinstance(self.conflate, str):
            self.conflate = [self.conflate]
        self._policy = ConflationPolicy(self.conflate) if self.conflate else None  # PatternError names a bad one
        if self.conflation_fence not in ("address", "all"):
            raise ValueError(f"conflation_fence must be 'address' or 'all', got {self.conflation_fence!r}")
        if self.conflation_threshold < 0:
            raise ValueError(f"conflation_threshold must be >= 0 bytes, got {self.conflation_threshold}")

    @property
    def local_features(self) -> tuple[str, ...]:
        """What this transport offers in its offer and answer."""
        return LOCAL_FEATURES if self.clock_sync else tuple(f for f in LOCAL_FEATURES if f != CLOCK_FEATURE)

    def policy_for(self, spec: ChannelSpec) -> ConflationPolicy | None:
        """The conflation policy of the channel ``spec`` (its own patterns, else the config's for the defaults)."""
        if spec.conflate:
            return spec.policy()
        if spec.label in (UNRELIABLE_LABEL, RELIABLE_LABEL):
            return self._policy
        return None

    def rtc_configuration(self) -> RTCConfiguration:
        servers = []
        for entry in self.ice_servers:
            if isinstance(entry, str):
                servers.append(RTCIceServer(urls=entry))
            elif isinstance(entry, dict) and "urls" in entry:
                servers.append(
                    RTCIceServer(urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential"))
                )
            else:
                raise ValueError(f"ice_servers entries are URLs or {{urls, username, credential}} maps, got {entry!r}")
        # An explicit empty list: aiortc would otherwise fall back to a public STUN server.
        return RTCConfiguration(iceServers=servers)


@dataclass(frozen=True)
class CandidatePairInfo:
    """The ICE candidate pair carrying the connection; types are host, srflx, prflx or relay."""

    local_address: tuple[str, int]
    remote_address: tuple[str, int]
    local_type: str
    remote_type: str


@dataclass(frozen=True)
class WebRtcStats:
    """Counters of one connection. ``messages_*`` count CLASP frames, ``datachannel_*`` DataChannel messages;
    ``ignored_signals`` counts signals for this connection that were not applied (wrong sender or
    correlation id, unusable SDP or candidate)."""

    state: str
    selected_pair: CandidatePairInfo | None
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    datachannel_messages_sent: int
    datachannel_messages_received: int
    decode_errors: int
    dropped_received: int
    rtt: float | None
    ignored_signals: int = 0
    conflated: int = 0
    clock: PeerClock | None = None


#: The counter names of :class:`WebRtcStats` the connection keeps as plain ints while it runs
#: (the message and byte counts are its channels' sums: ``Channels.totals()``).
COUNTERS = (
    "decode_errors",
    "dropped_received",
    "ignored_signals",
)
