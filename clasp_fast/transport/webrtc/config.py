"""What a WebRTC transport is configured with and reports: options, channel specs, labels, stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import RTCConfiguration, RTCIceServer

from .. import ice
from ...wire.protocol import BATCH_FEATURE, KEEPALIVE_FEATURE

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
LOCAL_FEATURES = (BATCH_FEATURE, KEEPALIVE_FEATURE)

State = Literal["new", "connecting", "connected", "closing", "closed", "failed"]


@dataclass(frozen=True)
class ChannelSpec:
    """A DataChannel and the messages it carries.

    ``prefix`` routes messages whose address is the prefix or lies under it to this channel
    (the longest matching prefix wins). Reliability: the defaults are ordered and fully reliable;
    ``ordered=False, max_retransmits=0`` is unreliable; ``max_retransmits=N`` or
    ``max_packet_life_time=ms`` is partially reliable.
    """

    label: str
    prefix: str | None = None
    ordered: bool = True
    max_retransmits: int | None = None
    max_packet_life_time: int | None = None

    @property
    def reliable(self) -> bool:
        return self.max_retransmits is None and self.max_packet_life_time is None

    def __post_init__(self) -> None:
        if self.max_retransmits is not None and self.max_packet_life_time is not None:
            raise ValueError(f"channel {self.label!r}: give max_retransmits or max_packet_life_time, not both")
        if self.prefix is not None and not self.prefix.startswith("/"):
            raise ValueError(f"channel {self.label!r}: prefix must start with '/', got {self.prefix!r}")


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
    receive_queue_limit: int = 100_000
    # Data channels over clasp_fast.sctp's bundling data path; False keeps aiortc's own SCTP.
    fast_sctp: bool = True
    # Seam (data plane, docs/data-plane.md): with fast_sctp, the compiled DTLS record layer
    # (fast_dtls) and many UDP datagrams per system call (udp_batching).
    fast_dtls: bool = True
    udp_batching: bool = True

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
        if self.keepalive_timeout <= self.keepalive_interval:
            raise ValueError("keepalive_timeout must be longer than keepalive_interval")

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


#: The counter names of :class:`WebRtcStats` kept as plain ints while the connection runs.
COUNTERS = (
    "bytes_sent",
    "bytes_received",
    "messages_sent",
    "messages_received",
    "datachannel_messages_sent",
    "datachannel_messages_received",
    "decode_errors",
    "dropped_received",
    "ignored_signals",
)
