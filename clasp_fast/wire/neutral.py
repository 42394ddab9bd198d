"""Messages to and from JSON: the neutral form of the conformance vectors, and plain JSON.

The neutral form (docs/protocol.md §14) loses nothing:

A message is a JSON object with ``"type"`` (the upper-case name, e.g. ``"SET"``) and its fields
by their snake_case wire names (``"from"`` for REPLAY's ``from_``). Values are tagged::

    {"t": "null"}  {"t": "bool", "v": true}  {"t": "int", "v": 5}
    {"t": "float", "bits": "3ff0000000000000"}      (IEEE-754 f64 bits, 16 hex digits)
    {"t": "str", "v": "x"}  {"t": "bytes", "hex": "00ff"}
    {"t": "array", "v": [...]}  {"t": "map", "v": {"k": ...}}

Other floats are hex bits too: PUBLISH ``samples`` (a list), SUBSCRIBE ``options.epsilon``,
ANNOUNCE ``meta.range`` (a pair). A SET ``ttl`` is ``{"mode": "never"|"sliding"|"absolute",
"secs": n}``. Absent optional fields are left out.

The plain form (``plain=True``) is for people: the same message objects, with values as ordinary
JSON (``{"type": "SET", "address": "/a", "value": 0.5}``), floats as numbers and bytes as
``{"$bytes": "00ff"}``. Reading plain JSON also accepts tagged values, so either form can be given;
an int and a float stay apart as JSON tells them (``5`` against ``5.0``).
"""

from __future__ import annotations

import struct
from typing import Any

from .messages import (
    MISSING,
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
)

__all__ = ["NeutralError", "from_neutral", "to_neutral", "value_from_neutral", "value_to_neutral",
           "value_from_plain", "value_to_plain", "float_from_bits", "float_to_bits"]

TYPE_NAMES = {
    Hello: "HELLO", Welcome: "WELCOME", Announce: "ANNOUNCE", FederationSync: "FEDERATION_SYNC",
    Subscribe: "SUBSCRIBE", Unsubscribe: "UNSUBSCRIBE", Publish: "PUBLISH", Set: "SET", Get: "GET",
    Snapshot: "SNAPSHOT", Replay: "REPLAY", Bundle: "BUNDLE", Sync: "SYNC", Ping: "PING",
    Pong: "PONG", Ack: "ACK", Error: "ERROR", Query: "QUERY", Result: "RESULT",
}
CLASSES = {name: cls for cls, name in TYPE_NAMES.items()}


class NeutralError(ValueError):
    """Neutral JSON that does not describe a message; the text names the place."""


def float_to_bits(x: float) -> str:
    return struct.pack(">d", x).hex()


def float_from_bits(bits: str, where: str = "float") -> float:
    try:
        raw = bytes.fromhex(bits)
    except (TypeError, ValueError):
        raise NeutralError(f"{where}: {bits!r} is not hex") from None
    if len(raw) != 8:
        raise NeutralError(f"{where}: float bits must be 16 hex digits, got {bits!r}")
    return struct.unpack(">d", raw)[0]


# ---------------------------------------------------------------------------------------------
# Values

def value_to_neutral(v: Any) -> dict:
    """A CLASP value (Python object) in the tagged neutral form."""
    if v is None:
        return {"t": "null"}
    if isinstance(v, bool):
        return {"t": "bool", "v": v}
    if isinstance(v, int):
        return {"t": "int", "v": v}
    if isinstance(v, float):
        return {"t": "float", "bits": float_to_bits(v)}
    if isinstance(v, str):
        return {"t": "str", "v": v}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"t": "bytes", "hex": bytes(v).hex()}
    if isinstance(v, (list, tuple)):
        return {"t": "array", "v": [value_to_neutral(x) for x in v]}
    if isinstance(v, dict):
        return {"t": "map", "v": {k: value_to_neutral(x) for k, x in v.items()}}
    raise NeutralError(f"no neutral form for {type(v).__name__}")


def value_from_neutral(n: Any, where: str = "value") -> Any:
    """A Python value from its tagged neutral form."""
    if not isinstance(n, dict) or "t" not in n:
        raise NeutralError(f"{where}: expected a tagged value like {{\"t\": \"int\", \"v\": 1}}, "
                           f"got {n!r}")
    t = n["t"]
    try:
        if t == "null":
            return None
        if t == "bool":
            if not isinstance(n["v"], bool):
                raise NeutralError(f"{where}: bool value must be true/false")
            return n["v"]
        if t == "int":
            if not isinstance(n["v"], int) or isinstance(n["v"], bool):
                raise NeutralError(f"{where}: int value must be an integer")
            return n["v"]
        if t == "float":
            return float_from_bits(n["bits"], where)
        if t == "str":
            if not isinstance(n["v"], str):
                raise NeutralError(f"{where}: str value must be a string")
            return n["v"]
        if t == "bytes":
            return bytes.fromhex(n["hex"])
        if t == "array":
            return [value_from_neutral(x, f"{where}[{i}]") for i, x in enumerate(n["v"])]
        if t == "map":
            return {k: value_from_neutral(x, f"{where}[{k!r}]") for k, x in n["v"].items()}
    except KeyError as e:
        raise NeutralError(f"{where}: {t} value lacks key {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        if isinstance(e, NeutralError):
            raise
        raise NeutralError(f"{where}: malformed {t} value ({e})") from None
    raise NeutralError(f"{where}: unknown value tag {t!r}")


# Plain JSON values

_TAG_KEYS = {"null": set(), "bool": {"v"}, "int": {"v"}, "float": {"bits"}, "str": {"v"},
             "bytes": {"hex"}, "array": {"v"}, "map": {"v"}}


def _is_tagged(n: Any) -> bool:
    return (isinstance(n, dict) and n.get("t") in _TAG_KEYS
            and set(n) == {"t"} | _TAG_KEYS[n["t"]])


def value_to_plain(v: Any) -> Any:
    """A CLASP value as plain JSON (bytes as ``{"$bytes": hex}``)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(v).hex()}
    if isinstance(v, (list, tuple)):
        return [value_to_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: value_to_plain(x) for k, x in v.items()}
    raise NeutralError(f"no JSON form for {type(v).__name__}")


def value_from_plain(n: Any, where: str = "value") -> Any:
    """A Python value from plain JSON, or from the tagged neutral form where a value is tagged."""
    if _is_tagged(n):
        return value_from_neutral(n, where)
    if isinstance(n, dict):
        if set(n) == {"$bytes"}:
            try:
                return bytes.fromhex(n["$bytes"])
            except (TypeError, ValueError):
                raise NeutralError(f"{where}: $bytes must be hex, got {n['$bytes']!r}") from None
        return {k: value_from_plain(x, f"{where}[{k!r}]") for k, x in n.items()}
    if isinstance(n, list):
        return [value_from_plain(x, f"{where}[{i}]") for i, x in enumerate(n)]
    return n


def _value_in(n: Any, where: str, plain: bool) -> Any:
    return value_from_plain(n, where) if plain else value_from_neutral(n, where)


def _value_out(v: Any, plain: bool) -> Any:
    return value_to_plain(v) if plain else value_to_neutral(v)


def _float_in(x: Any, where: str, plain: bool) -> float:
    if plain and isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return float_from_bits(x, where)


def _float_out(x: float, plain: bool) -> Any:
    return float(x) if plain else float_to_bits(float(x))


# ---------------------------------------------------------------------------------------------
# Messages

def _signal_to_neutral(s: SignalInfo, with_meta: bool, plain: bool) -> dict:
    out: dict = {"address": s.address, "signal_type": s.signal_type}
    if s.datatype is not None:
        out["datatype"] = s.datatype
    if s.access is not None:
        out["access"] = s.access
    if with_meta and s.meta is not None:
        meta: dict = {}
        m = s.meta
        if m.unit is not None:
            meta["unit"] = m.unit
        if m.range is not None:
            meta["range"] = [_float_out(m.range[0], plain), _float_out(m.range[1], plain)]
        if m.default is not MISSING:
            meta["default"] = _value_out(m.default, plain)
        if m.description is not None:
            meta["description"] = m.description
        out["meta"] = meta
    return out


def _put(out: dict, key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


def to_neutral(message: Message, *, plain: bool = False) -> dict:
    """The neutral JSON form (a dict) of a message; with ``plain``, the plain JSON form."""
    t = type(message)
    if t not in TYPE_NAMES:
        raise NeutralError(f"not a CLASP message: {message!r}")
    out: dict = {"type": TYPE_NAMES[t]}
    m: Any = message
    if t is Set:
        out.update(address=m.address, value=_value_out(m.value, plain), lock=bool(m.lock),
                   unlock=bool(m.unlock))
        _put(out, "revision", m.revision)
        if m.ttl is not None:
            out["ttl"] = {"mode": "never"} if m.ttl.mode == "never" else \
                {"mode": m.ttl.mode, "secs": m.ttl.secs}
    elif t is Publish:
        out["address"] = m.address
        _put(out, "signal", m.signal)
        _put(out, "phase", m.phase)
        if m.value is not MISSING:
            out["value"] = _value_out(m.value, plain)
        if m.samples is not None:
            out["samples"] = [_float_out(x, plain) for x in m.samples]
        for key in ("timestamp", "id", "rate"):
            _put(out, key, getattr(m, key))
    elif t is Hello:
        out.update(version=m.version, name=m.name, features=list(m.features))
        _put(out, "token", m.token)
    elif t is Welcome:
        out.update(version=m.version, session=m.session, name=m.name,
                   features=list(m.features), time=m.time)
        _put(out, "token", m.token)
    elif t is Announce:
        out.update(namespace=m.namespace, signals=[_signal_to_neutral(s, True, plain) for s in m.signals])
    elif t is Result:
        out["signals"] = [_signal_to_neutral(s, False, plain) for s in m.signals]
    elif t is FederationSync:
        out.update(op=m.op, patterns=list(m.patterns), revisions=dict(m.revisions))
        _put(out, "since_revision", m.since_revision)
        _put(out, "origin", m.origin)
    elif t is Subscribe:
        out.update(id=m.id, pattern=m.pattern, types=list(m.types))
        if m.options is not None:
            o = m.options
            opts: dict = {}
            _put(opts, "max_rate", o.max_rate)
            if o.epsilon is not None:
                opts["epsilon"] = _float_out(o.epsilon, plain)
            _put(opts, "history", o.history)
            _put(opts, "window", o.window)
            out["options"] = opts
    elif t is Unsubscribe:
        out["id"] = m.id
    elif t in (Get,):
        out["address"] = m.address
    elif t is Query:
        out["pattern"] = m.pattern
    elif t is Snapshot:
        params = []
        for p in m.params:
            item = {"address": p.address, "value": _value_out(p.value, plain), "revision": p.revision}
            _put(item, "writer", p.writer)
            _put(item, "timestamp", p.timestamp)
            params.append(item)
        out["params"] = params
    elif t is Replay:
        out["pattern"] = m.pattern
        _put(out, "from", m.from_)
        _put(out, "to", m.to)
        _put(out, "limit", m.limit)
        out["types"] = list(m.types)
    elif t is Bundle:
        out["messages"] = [to_neutral(x, plain=plain) for x in m.messages]
        _put(out, "timestamp", m.timestamp)
    elif t is Sync:
        out["t1"] = m.t1
        _put(out, "t2", m.t2)
        _put(out, "t3", m.t3)
    elif t is Ack:
        for key in ("address", "revision", "locked", "holder", "correlation_id"):
            _put(out, key, getattr(m, key))
    elif t is Error:
        out.update(code=m.code, message=m.message)
        _put(out, "address", m.address)
        _put(out, "correlation_id", m.correlation_id)
    return out


def _signal_from_neutral(d: dict, where: str, plain: bool) -> SignalInfo:
    info = SignalInfo(d["address"], d["signal_type"], d.get("datatype"), d.get("access"))
    meta = d.get("meta")
    if meta is not None:
        rng = meta.get("range")
        if rng is not None:
            rng = (_float_in(rng[0], f"{where}.meta.range", plain),
                   _float_in(rng[1], f"{where}.meta.range", plain))
        default = meta.get("default")
        info.meta = SignalMeta(
            meta.get("unit"), rng,
            MISSING if default is None else _value_in(default, f"{where}.meta.default", plain),
            meta.get("description"))
    return info


def from_neutral(d: dict, *, plain: bool = False) -> Message:
    """The message described by a neutral JSON object (see the module docstring); with ``plain``,
    by a plain JSON object (tagged values are accepted there too)."""
    if not isinstance(d, dict):
        raise NeutralError(f"a message must be a JSON object, got {type(d).__name__}")
    kind = d.get("type")
    if kind not in CLASSES:
        raise NeutralError(f"unknown or missing message type {kind!r} "
                           f"(one of {', '.join(CLASSES)})")
    try:
        return _from_neutral(kind, d, plain)
    except KeyError as e:
        raise NeutralError(f"{kind} lacks required field {e}") from None
    except (TypeError, AttributeError, IndexError) as e:
        raise NeutralError(f"{kind}: malformed field ({e})") from None


def _from_neutral(kind: str, d: dict, plain: bool) -> Message:
    g = d.get
    if kind == "SET":
        ttl = g("ttl")
        if ttl is not None:
            ttl = Ttl(ttl["mode"], ttl.get("secs"))
        return Set(d["address"], _value_in(d["value"], "value", plain), g("revision"),
                   bool(g("lock", False)), bool(g("unlock", False)), ttl)
    if kind == "PUBLISH":
        samples = g("samples")
        if samples is not None:
            import numpy

            samples = numpy.array([_float_in(b, "samples", plain) for b in samples],
                                  dtype=numpy.float64)
        return Publish(d["address"], g("signal"),
                       _value_in(d["value"], "value", plain) if "value" in d else MISSING,
                       samples, g("timestamp"), g("id"), g("phase"), g("rate"))
    if kind == "HELLO":
        return Hello(d["name"], g("features", []), g("version", 1), g("token"))
    if kind == "WELCOME":
        return Welcome(d["session"], d["name"], g("features", []), d["time"], g("version", 1),
                       g("token"))
    if kind == "ANNOUNCE":
        return Announce(d["namespace"], [_signal_from_neutral(s, f"signals[{i}]", plain)
                                         for i, s in enumerate(g("signals", []))])
    if kind == "RESULT":
        return Result([_signal_from_neutral(s, f"signals[{i}]", plain)
                       for i, s in enumerate(g("signals", []))])
    if kind == "FEDERATION_SYNC":
        return FederationSync(d["op"], g("patterns", []), g("revisions", {}), g("since_revision"),
                              g("origin"))
    if kind == "SUBSCRIBE":
        o = g("options")
        if o is not None:
            eps = o.get("epsilon")
            o = SubscribeOptions(o.get("max_rate"),
                                 None if eps is None else _float_in(eps, "options.epsilon", plain),
                                 o.get("history"), o.get("window"))
        return Subscribe(d["id"], d["pattern"], g("types", []), o)
    if kind == "UNSUBSCRIBE":
        return Unsubscribe(d["id"])
    if kind == "GET":
        return Get(d["address"])
    if kind == "QUERY":
        return Query(d["pattern"])
    if kind == "SNAPSHOT":
        return Snapshot([Param(p["address"], _value_in(p["value"], f"params[{i}].value", plain),
                               p["revision"], p.get("writer"), p.get("timestamp"))
                         for i, p in enumerate(g("params", []))])
    if kind == "REPLAY":
        return Replay(d["pattern"], g("from"), g("to"), g("limit"), g("types", []))
    if kind == "BUNDLE":
        return Bundle([from_neutral(m, plain=plain) for m in g("messages", [])], g("timestamp"))
    if kind == "SYNC":
        return Sync(d["t1"], g("t2"), g("t3"))
    if kind == "PING":
        return Ping()
    if kind == "PONG":
        return Pong()
    if kind == "ACK":
        return Ack(g("address"), g("revision"), g("locked"), g("holder"), g("correlation_id"))
    if kind == "ERROR":
        return Error(d["code"], d["message"], g("address"), g("correlation_id"))
    raise NeutralError(f"unknown message type {kind!r}")  # pragma: no cover
