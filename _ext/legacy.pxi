# Legacy v0 payloads: a MessagePack map with an upper-case "type" key (docs/protocol.md §7).
#
# Decoded the way the reference (Rust) decoder does, into the same message classes:
# a missing or lower-case "type" is rejected; nil optional fields are absent; an unsigned int
# above i64::MAX becomes a float; a bin that is valid UTF-8 becomes a str. One deliberate
# difference: the reference fails the whole message on a bin that is not UTF-8, whereas here
# it stays `bytes` -- the only v0 sender (the Python client) means bytes by it, and it loses
# nothing (vectors hc_v0_set_bin_value, py_msgpack_fallback_bundle_with_bytes_value).
# v0 is rare and never on a hot path, so this part is plain Python compiled as is.

_I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1


class _V0Error(Exception):
    def __init__(self, reason, field):
        self.reason = reason
        self.field = field


def _v0_value(v, int depth=0):
    if v is None or isinstance(v, (bool, float, str)):
        return v
    if isinstance(v, int):
        if v > _I64_MAX:
            return float(v)
        return v
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return v
    if depth >= C_MAX_NESTING:
        raise _V0Error(f"value nesting deeper than {C_MAX_NESTING}", "value")
    if isinstance(v, list):
        return [_v0_value(x, depth + 1) for x in v]
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise _V0Error(f"map key {k!r} is not a string", "value")
            out[k] = _v0_value(x, depth + 1)
        return out
    raise _V0Error(f"unsupported MessagePack value {type(v).__name__}", "value")


def _req(dict d, str key):
    if key not in d or d[key] is None:
        raise _V0Error(f"missing required key {key!r}", key)
    return d[key]


def _opt(dict d, str key):
    return d.get(key)


def _v0_str(dict d, str key, bint required=True):
    v = _req(d, key) if required else d.get(key)
    if v is None:
        return None
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            raise _V0Error("invalid UTF-8", key) from None
    if not isinstance(v, str):
        raise _V0Error(f"expected a string, got {type(v).__name__}", key)
    return v


def _v0_uint(dict d, str key, bint required=True, maximum=_U64_MAX):
    v = _req(d, key) if required else d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= maximum:
        raise _V0Error(f"expected an unsigned int up to {maximum}, got {v!r}", key)
    return v


def _v0_float(v, str key):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _V0Error(f"expected a number, got {v!r}", key)
    return float(v)


def _v0_bool(dict d, str key):
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _V0Error(f"expected a bool, got {v!r}", key)
    return v


def _v0_list(dict d, str key):
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise _V0Error(f"expected an array, got {type(v).__name__}", key)
    return v


def _v0_dict(v, str key):
    if not isinstance(v, dict):
        raise _V0Error(f"expected a map, got {type(v).__name__}", key)
    return v


def _v0_signal_type(v, str key):
    if v is None:
        return None
    if v not in _SIGNAL_CODES:
        raise _V0Error(f"unknown signal type {v!r}", key)
    return v


def _v0_types(dict d, str key):
    return [_v0_signal_type(t, key) for t in _v0_list(d, key)]


def _v0_features(dict d):
    return [f for f in _v0_list(d, "features") if f in _FEATURE_BITS]


def _v0_signal_info(v):
    d = _v0_dict(v, "signals")
    info = SignalInfo(_v0_str(d, "address"), _v0_signal_type(_req(d, "type"), "type"),
                      _v0_str(d, "datatype", False), _v0_str(d, "access", False))
    meta = d.get("meta")
    if meta is not None:
        meta = _v0_dict(meta, "meta")
        rng = meta.get("range")
        if rng is not None:
            if not isinstance(rng, list) or len(rng) != 2:
                raise _V0Error("range must be [min, max]", "range")
            rng = (_v0_float(rng[0], "range"), _v0_float(rng[1], "range"))
        info.meta = SignalMeta(_v0_str(meta, "unit", False), rng,
                               _v0_value(meta["default"]) if meta.get("default") is not None
                               else MISSING,
                               _v0_str(meta, "description", False))
    return info


def _v0_ttl(v):
    if v is None:
        return None
    if v == "Never":
        return Ttl.never()
    if isinstance(v, dict) and len(v) == 1:
        (mode, secs), = v.items()
        if mode in ("Sliding", "Absolute") and isinstance(secs, int) and not isinstance(secs, bool) \
                and 0 <= secs <= 0x7FFFFFFF:
            return Ttl(mode.lower(), secs)
    raise _V0Error(f"bad ttl {v!r}", "ttl")


def _v0_phase(v):
    if v is None:
        return None
    if v not in _PHASE_CODES:
        raise _V0Error(f"unknown phase {v!r}", "phase")
    return v


_V0_OPS = {name: op for op, name in FEDERATION_OPS.items()}


def _v0_message(d, int depth):
    if not isinstance(d, dict):
        raise _V0Error("a v0 message must be a map", "type")
    kind = d.get("type")
    if kind is None:
        raise _V0Error("no 'type' key", "type")
    if kind == "SET":
        return Set(_v0_str(d, "address"), _v0_value(d.get("value")),
                   _v0_uint(d, "revision", False), _v0_bool(d, "lock"), _v0_bool(d, "unlock"),
                   _v0_ttl(d.get("ttl")))
    if kind == "PUBLISH":
        value = d.get("value")
        if value is None:
            value = d.get("payload")
        samples = d.get("samples")
        if samples is not None:
            if not isinstance(samples, list):
                raise _V0Error("samples must be an array", "samples")
            np = _numpy()
            samples = np.array([_v0_float(x, "samples") for x in samples], dtype=np.float64)
        return Publish(_v0_str(d, "address"), _v0_signal_type(d.get("signal"), "signal"),
                       MISSING if value is None else _v0_value(value), samples,
                       _v0_uint(d, "timestamp", False), _v0_uint(d, "id", False, 0xFFFFFFFF),
                       _v0_phase(d.get("phase")), _v0_uint(d, "rate", False, 0xFFFFFFFF))
    if kind == "HELLO":
        return Hello(_v0_str(d, "name"), _v0_features(d), _v0_uint(d, "version", True, 0xFF),
                     _v0_str(d, "token", False) or None)
    if kind == "WELCOME":
        return Welcome(_v0_str(d, "session"), _v0_str(d, "name"),
                       [f for f in _v0_features(d) if f != "federation"], _v0_uint(d, "time"),
                       _v0_uint(d, "version", True, 0xFF), _v0_str(d, "token", False) or None)
    if kind == "ANNOUNCE":
        return Announce(_v0_str(d, "namespace"),
                        [_v0_signal_info(s) for s in _v0_list(d, "signals")])
    if kind == "SUBSCRIBE":
        options = d.get("options")
        if options is not None:
            o = _v0_dict(options, "options")
            eps = o.get("epsilon")
            options = SubscribeOptions(_v0_uint(o, "max_rate", False, 0xFFFFFFFF),
                                       None if eps is None else _v0_float(eps, "epsilon"),
                                       _v0_uint(o, "history", False, 0xFFFFFFFF),
                                       _v0_uint(o, "window", False, 0xFFFFFFFF))
            if options == SubscribeOptions():
                options = None
        return Subscribe(_v0_uint(d, "id", True, 0xFFFFFFFF), _v0_str(d, "pattern"),
                         _v0_types(d, "types"), options)
    if kind == "UNSUBSCRIBE":
        return Unsubscribe(_v0_uint(d, "id", True, 0xFFFFFFFF))
    if kind == "GET":
        return Get(_v0_str(d, "address"))
    if kind == "SNAPSHOT":
        params = []
        for p in _v0_list(d, "params"):
            p = _v0_dict(p, "params")
            params.append(Param(_v0_str(p, "address"), _v0_value(p.get("value")),
                                _v0_uint(p, "revision"), _v0_str(p, "writer", False),
                                _v0_uint(p, "timestamp", False)))
        return Snapshot(params)
    if kind == "REPLAY":
        return Replay(_v0_str(d, "pattern"), _v0_uint(d, "from", False), _v0_uint(d, "to", False),
                      _v0_uint(d, "limit", False, 0xFFFFFFFF), _v0_types(d, "types"))
    if kind == "FEDERATION_SYNC":
        op = _V0_OPS.get(d.get("op"))
        if op is None:
            raise _V0Error(f"unknown federation op {d.get('op')!r}", "op")
        revisions = {}
        for key, rev in _v0_dict(d.get("revisions") or {}, "revisions").items():
            revisions[_v0_str({"key": key}, "key")] = _v0_uint({"rev": rev}, "rev")
        return FederationSync(op, [_v0_str({"p": p}, "p") for p in _v0_list(d, "patterns")],
                              revisions, _v0_uint(d, "since_revision", False),
                              _v0_str(d, "origin", False))
    if kind == "BUNDLE":
        if depth >= C_MAX_NESTING:
            raise _V0Error(f"bundles nested deeper than {C_MAX_NESTING}", "messages")
        return Bundle([_v0_message(m, depth + 1) for m in _v0_list(d, "messages")],
                      _v0_uint(d, "timestamp", False))
    if kind == "SYNC":
        return Sync(_v0_uint(d, "t1"), _v0_uint(d, "t2", False), _v0_uint(d, "t3", False))
    if kind == "PING":
        return Ping()
    if kind == "PONG":
        return Pong()
    if kind == "ACK":
        locked = d.get("locked")
        if locked is not None and not isinstance(locked, bool):
            raise _V0Error(f"expected a bool, got {locked!r}", "locked")
        return Ack(_v0_str(d, "address", False), _v0_uint(d, "revision", False), locked,
                   _v0_str(d, "holder", False), _v0_uint(d, "correlation_id", False, 0xFFFFFFFF))
    if kind == "ERROR":
        return Error(_v0_uint(d, "code", True, 0xFFFF), _v0_str(d, "message"),
                     _v0_str(d, "address", False),
                     _v0_uint(d, "correlation_id", False, 0xFFFFFFFF))
    if kind == "QUERY":
        return Query(_v0_str(d, "pattern"))
    if kind == "RESULT":
        signals = [_v0_signal_info(s) for s in _v0_list(d, "signals")]
        for s in signals:
            s.meta = None
        return Result(signals)
    raise _V0Error(f"unknown v0 message type {kind!r} (names are upper-case)", "type")


cdef object decode_v0(bytes payload, Py_ssize_t offset):
    """A v0 payload (starting at `offset` in the caller's buffer) as a message."""
    import msgpack
    try:
        d = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except msgpack.ExtraData as extra:
        d = extra.unpacked
    except (ValueError, msgpack.UnpackException, UnicodeDecodeError) as e:
        decode_fail(offset, f"invalid MessagePack payload ({e})", "v0")
    except Exception as e:
        decode_fail(offset, f"invalid MessagePack payload ({type(e).__name__}: {e})", "v0")
    try:
        return _v0_message(d, 0)
    except _V0Error as e:
        decode_fail(offset, f"v0 payload: {e.reason}", f"v0.{e.field}")
    except (TypeError, ValueError) as e:
        decode_fail(offset, f"v0 message malformed ({e})", "v0")
