"""CLASP message classes and protocol constants (docs/protocol.md §5-§6).

Every message is a compiled class with public attributes, equality by type and fields
(NaN equals NaN), a readable repr showing the non-default fields, and a ``TYPE`` code.
"""

from __future__ import annotations

from .._codec import (
    DEFAULT_FEATURES,
    FEATURES,
    FEDERATION_OPS,
    MESSAGE_CLASSES,
    MISSING,
    MSG_ACK,
    MSG_ANNOUNCE,
    MSG_BUNDLE,
    MSG_ERROR,
    MSG_FEDERATION_SYNC,
    MSG_GET,
    MSG_HELLO,
    MSG_PING,
    MSG_PONG,
    MSG_PUBLISH,
    MSG_QUERY,
    MSG_REPLAY,
    MSG_RESULT,
    MSG_SET,
    MSG_SNAPSHOT,
    MSG_SUBSCRIBE,
    MSG_SYNC,
    MSG_UNSUBSCRIBE,
    MSG_WELCOME,
    PHASES,
    QOS_COMMIT,
    QOS_CONFIRM,
    QOS_FIRE,
    SIGNAL_TYPES,
    Ack,
    Announce,
    Bundle,
    Error,
    FederationSync,
    Get,
    Hello,
    Message,
    Param,
    Ping,
    Pong,
    Publish,
    Query,
    Replay,
    Result,
    Set,
    SignalInfo,
    SignalMeta,
    Snapshot,
    Subscribe,
    SubscribeOptions,
    Sync,
    Ttl,
    Unsubscribe,
    Welcome,
    default_qos,
    values_equal,
)

__all__ = [
    "DEFAULT_FEATURES", "FEATURES", "FEDERATION_OPS", "MESSAGE_CLASSES", "MISSING",
    "MSG_ACK", "MSG_ANNOUNCE", "MSG_BUNDLE", "MSG_ERROR", "MSG_FEDERATION_SYNC", "MSG_GET",
    "MSG_HELLO", "MSG_PING", "MSG_PONG", "MSG_PUBLISH", "MSG_QUERY", "MSG_REPLAY", "MSG_RESULT",
    "MSG_SET", "MSG_SNAPSHOT", "MSG_SUBSCRIBE", "MSG_SYNC", "MSG_UNSUBSCRIBE", "MSG_WELCOME",
    "PHASES", "QOS_COMMIT", "QOS_CONFIRM", "QOS_FIRE", "SIGNAL_TYPES",
    "Ack", "Announce", "Bundle", "Error", "FederationSync", "Get", "Hello", "Message", "Param",
    "Ping", "Pong", "Publish", "Query", "Replay", "Result", "Set", "SignalInfo", "SignalMeta",
    "Snapshot", "Subscribe", "SubscribeOptions", "Sync", "Ttl", "Unsubscribe", "Welcome",
    "default_qos", "values_equal",
]

# Helpers of the package's clients (not re-exported by ``clasp_fast``).


def stream_message(address: str, samples_or_value: object, rate: int | None = None) -> Publish:
    """A stream PUBLISH: a sequence or numpy array of floats goes as samples, anything else as a value."""
    if isinstance(samples_or_value, (list, tuple)) or hasattr(samples_or_value, "dtype"):
        return Publish(address=address, signal="stream", samples=samples_or_value, rate=rate)
    return Publish(address=address, signal="stream", value=samples_or_value, rate=rate)


def delivered(message: object) -> tuple[object, str]:
    """The value and signal type a subscriber gets for a SET, a PUBLISH or a SNAPSHOT's Param."""
    if type(message) is Publish:
        value = message.samples if message.samples is not None else message.value
        return value, message.signal or "event"
    return message.value, "param"  # type: ignore[attr-defined]
