"""The transport floor: moving CLASP frames between peers.

Signaling channels, the WebRTC DataChannel transport, and the data path under it (SCTP, DTLS
records, batched UDP, the ICE seam). Nothing here knows about clients, P2P sessions or the relay.
"""
