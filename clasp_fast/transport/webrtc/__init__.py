"""CLASP frames peer to peer over WebRTC DataChannels (aiortc), with compiled send batching.

Set-up follows docs/protocol.md §10.5 over any :class:`~clasp_fast.signaling.SignalingChannel`::

    config = WebRtcConfig(host_addresses=["127.0.0.1"])
    sender, receiver = await WebRtcTransport.connect(config, signaling, peer="session-b")
    await sender.send(Set(address="/lumen/layer/0/opacity", value=0.5))
    async for message in receiver:
        ...

Routing: messages whose default QoS (docs/protocol.md §2.1) is Fire travel on ``clasp`` (unordered, no
retransmits), Confirm/Commit on ``clasp-reliable``; extra channels carry the messages under their
address prefix. Toward peers whose offer/answer lists ``"batch"`` in ``features`` several complete
frames share one DataChannel message (docs/reference.md, "WebRTC DataChannel transport"); toward other peers every
message holds exactly one frame. Received messages may always hold several frames.

Receiving: a received DataChannel message is decoded and delivered at most
:data:`RECEIVE_SLICE_FRAMES` frames per event-loop iteration, in order; :class:`Delivery` says on
which channel, from which peer and in how big a DataChannel message a message arrived
(:func:`current_delivery` inside callbacks, :meth:`WebRtcReceiver.deliveries` for iteration).

Liveness: between clasp_fast peers (feature ``"keepalive"``) a negotiated control channel
``clasp-control`` carries PING/PONG every ``keepalive_interval`` seconds; they measure the round-trip
time, and silence on every channel for ``keepalive_timeout`` seconds closes the connection with
reason ``"timeout"``. With other peers, loss is noticed through aiortc's ICE consent checks (about 30 s).

Teardown never drops what the peer already sent (docs/p2p-lifecycle.md).

One module per part of a connection: :mod:`.config` (options, specs, stats), :mod:`.channels`
(DataChannels, batching, routing), :mod:`.sender`, :mod:`.receive`, :mod:`.negotiation` (offer,
answer, candidates), :mod:`.liveness` (keepalive, probe), :mod:`.teardown` and :mod:`.transport`,
which puts them together.
"""

from __future__ import annotations

from .config import (
    CONTROL_LABEL,
    LOCAL_FEATURES,
    RELIABLE_LABEL,
    SCTP_USER_DATA_MAX,
    UNRELIABLE_LABEL,
    CandidatePairInfo,
    ChannelSpec,
    WebRtcConfig,
    WebRtcStats,
)
from .negotiation import parse_candidate
from .receive import RECEIVE_BACKLOG_BYTES, RECEIVE_SLICE_FRAMES, Delivery, WebRtcReceiver, current_delivery
from .sender import WebRtcSender
from .transport import WebRtcTransport

__all__ = [
    "ChannelSpec",
    "WebRtcConfig",
    "WebRtcTransport",
    "WebRtcSender",
    "WebRtcReceiver",
    "WebRtcStats",
    "CandidatePairInfo",
    "Delivery",
    "current_delivery",
    "RECEIVE_BACKLOG_BYTES",
    "RECEIVE_SLICE_FRAMES",
    "UNRELIABLE_LABEL",
    "RELIABLE_LABEL",
    "CONTROL_LABEL",
    "SCTP_USER_DATA_MAX",
    "LOCAL_FEATURES",
    "parse_candidate",
]
