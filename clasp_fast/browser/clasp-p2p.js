// clasp-p2p.js — CLASP peer to peer for browsers (and any runtime with WebSocket + RTCPeerConnection).
//
// A dependency-free ES module: the CLASP v1 binary codec, a relay connection (HELLO, subscriptions,
// SET/PUBLISH), and WebRTC peers signaled through the relay exactly as docs/protocol.md §10 describes.
// Served by the clasp_fast relay at GET /clasp-p2p.js.
//
//   import { ClaspP2P } from "/clasp-p2p.js";
//   const p2p = new ClaspP2P({ signaling: "ws://127.0.0.1:7330", clientId: "viewer" });
//   await p2p.connect();
//   const peer = await p2p.connectToPeer("sensor-1");
//   peer.on("/sensor/**", (value, address) => { ... });
//   peer.set("/sensor/gain", 0.5);
//
// Numbers: a JS number is sent as f64 (as the official JS client does); a BigInt is sent as i64
// (outside the i64 range: ClaspEncodeError). Received i8/i16/i32 become numbers; a received i64 becomes
// a number when it is a safe integer (|n| <= 2^53 - 1) and a BigInt otherwise, so nothing is rounded.
// u64 protocol fields (revision, timestamps) follow the same rule.

// ---------------------------------------------------------------------------------------------
// Codec (docs/protocol.md §2-§6)

export const MAGIC = 0x53;
export const QOS = { fire: 0, confirm: 1, commit: 2 };
export const SIGNALS = ["param", "event", "stream", "gesture", "timeline"];
export const PHASES = ["start", "move", "end", "cancel"];
const FEATURE_BITS = [["param", 0x80], ["event", 0x40], ["stream", 0x20], ["gesture", 0x10], ["timeline", 0x08], ["federation", 0x04]];
const TYPE_MASK_BITS = [["param", 0x01], ["event", 0x02], ["stream", 0x04], ["gesture", 0x08], ["timeline", 0x10]];
const FEDERATION_OPS = [1, 2, 3, 4];

export const MSG = {
  HELLO: 0x01, WELCOME: 0x02, ANNOUNCE: 0x03, FEDERATION_SYNC: 0x04, SUBSCRIBE: 0x10, UNSUBSCRIBE: 0x11,
  PUBLISH: 0x20, SET: 0x21, GET: 0x22, SNAPSHOT: 0x23, REPLAY: 0x24, BUNDLE: 0x30, SYNC: 0x40,
  PING: 0x41, PONG: 0x42, ACK: 0x50, ERROR: 0x51, QUERY: 0x60, RESULT: 0x61,
};
const MSG_NAMES = Object.fromEntries(Object.entries(MSG).map(([k, v]) => [v, k]));

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export class ClaspError extends Error {
  constructor(message) { super(message); this.name = "ClaspError"; }
}

/** A frame or payload that cannot be decoded; `offset` is the byte offset, `field` what was being read. */
export class ClaspDecodeError extends ClaspError {
  constructor(message, offset, field) {
    super(`${message} (field ${field}, offset ${offset})`);
    this.name = "ClaspDecodeError";
    this.offset = offset;
    this.field = field;
  }
}

/** A message or value that cannot be encoded; `path` says where in the value. */
export class ClaspEncodeError extends ClaspError {
  constructor(message, path = "") {
    super(path ? `${message} (at ${path})` : message);
    this.name = "ClaspEncodeError";
    this.path = path;
  }
}

/** A WebRTC or signaling failure; `peer` is the remote session id, `step` the set-up step. */
export class ClaspTransportError extends ClaspError {
  constructor(message, peer, step) {
    super(`${message} (peer ${peer}, step ${step})`);
    this.name = "ClaspTransportError";
    this.peer = peer;
    this.step = step;
  }
}

function bigToSafe(n) {
  return n >= -9007199254740991n && n <= 9007199254740991n ? Number(n) : n;
}

class Writer {
  constructor(size = 256) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }
  reserve(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(this.buf.subarray(0, this.pos));
    this.buf = bigger;
    this.view = new DataView(bigger.buffer);
  }
  u8(v) { this.reserve(1); this.buf[this.pos++] = v & 0xff; }
  u16(v, path) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new ClaspEncodeError(`${v} does not fit in u16`, path);
    this.reserve(2); this.view.setUint16(this.pos, v); this.pos += 2;
  }
  u32(v, path) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new ClaspEncodeError(`${v} does not fit in u32`, path);
    this.reserve(4); this.view.setUint32(this.pos, v); this.pos += 4;
  }
  u64(v, path) {
    let b;
    try { b = BigInt(v); } catch { throw new ClaspEncodeError(`${v} is not an integer`, path); }
    if (b < 0n || b > U64_MAX) throw new ClaspEncodeError(`${v} does not fit in u64`, path);
    this.reserve(8); this.view.setBigUint64(this.pos, b); this.pos += 8;
  }
  i64(v, path) {
    if (v < I64_MIN || v > I64_MAX) throw new ClaspEncodeError(`${v} is outside the i64 range`, path);
    this.reserve(8); this.view.setBigInt64(this.pos, v); this.pos += 8;
  }
  f64(v) { this.reserve(8); this.view.setFloat64(this.pos, v); this.pos += 8; }
  raw(bytes) { this.reserve(bytes.length); this.buf.set(bytes, this.pos); this.pos += bytes.length; }
  str(s, path) {
    if (typeof s !== "string") throw new ClaspEncodeError(`expected a string, got ${typeof s}`, path);
    const bytes = textEncoder.encode(s);
    if (bytes.length > 0xffff) throw new ClaspEncodeError(`string of ${bytes.length} UTF-8 bytes is longer than 65535`, path);
    this.u16(bytes.length, path); this.raw(bytes);
  }
  count(n, path) {
    if (n > 0xffff) throw new ClaspEncodeError(`${n} items, at most 65535 allowed`, path);
    this.u16(n, path);
  }
  bytes() { return this.buf.slice(0, this.pos); }
}

class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.buf = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
    this.end = end;
  }
  need(n, field) {
    if (this.pos + n > this.end) {
      throw new ClaspDecodeError(`truncated: ${n} byte(s) needed, ${this.end - this.pos} left`, this.pos, field);
    }
  }
  get remaining() { return this.end - this.pos; }
  u8(field) { this.need(1, field); return this.buf[this.pos++]; }
  u16(field) { this.need(2, field); const v = this.view.getUint16(this.pos); this.pos += 2; return v; }
  u32(field) { this.need(4, field); const v = this.view.getUint32(this.pos); this.pos += 4; return v; }
  u64(field) { this.need(8, field); const v = this.view.getBigUint64(this.pos); this.pos += 8; return bigToSafe(v); }
  f64(field) { this.need(8, field); const v = this.view.getFloat64(this.pos); this.pos += 8; return v; }
  raw(n, field) { this.need(n, field); const v = this.buf.slice(this.pos, this.pos + n); this.pos += n; return v; }
  str(field) {
    const n = this.u16(field);
    const at = this.pos;
    const bytes = this.raw(n, field);
    try { return textDecoder.decode(bytes); } catch { throw new ClaspDecodeError("invalid UTF-8", at, field); }
  }
}

function encodeValueData(w, value, path) {
  const code = valueCode(value, path);
  writeValueData(w, code, value, path);
  return code;
}

function valueCode(value, path) {
  if (value === null || value === undefined) return 0x00;
  switch (typeof value) {
    case "boolean": return 0x01;
    case "number": return 0x07;
    case "bigint": return 0x05;
    case "string": return 0x08;
    case "object":
      if (value instanceof Uint8Array || value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return 0x09;
      if (Array.isArray(value)) return 0x0a;
      return 0x0b;
    default:
      throw new ClaspEncodeError(`a ${typeof value} cannot be sent as a CLASP value`, path);
  }
}

function asBytes(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

function writeValueData(w, code, value, path) {
  switch (code) {
    case 0x00: return;
    case 0x01: w.u8(value ? 1 : 0); return;
    case 0x05: w.i64(value, path); return;
    case 0x07: w.f64(value); return;
    case 0x08: w.str(value, path); return;
    case 0x09: {
      const bytes = asBytes(value);
      if (bytes.length > 0xffff) throw new ClaspEncodeError(`${bytes.length} bytes, at most 65535 allowed`, path);
      w.u16(bytes.length, path); w.raw(bytes); return;
    }
    case 0x0a:
      w.count(value.length, path);
      value.forEach((item, i) => { const p = `${path}[${i}]`; w.u8(valueCode(item, p)); writeValueData(w, valueCode(item, p), item, p); });
      return;
    case 0x0b: {
      const entries = value instanceof Map ? [...value.entries()] : Object.entries(value);
      w.count(entries.length, path);
      for (const [key, item] of entries) {
        const p = `${path}.${key}`;
        w.str(key, p);
        const c = valueCode(item, p);
        w.u8(c);
        writeValueData(w, c, item, p);
      }
      return;
    }
  }
}

function readValueData(r, code, field) {
  switch (code) {
    case 0x00: return null;
    case 0x01: return r.u8(field) !== 0;
    case 0x02: { r.need(1, field); const v = r.view.getInt8(r.pos); r.pos += 1; return v; }
    case 0x03: { r.need(2, field); const v = r.view.getInt16(r.pos); r.pos += 2; return v; }
    case 0x04: { r.need(4, field); const v = r.view.getInt32(r.pos); r.pos += 4; return v; }
    case 0x05: { r.need(8, field); const v = r.view.getBigInt64(r.pos); r.pos += 8; return bigToSafe(v); }
    case 0x06: { r.need(4, field); const v = r.view.getFloat32(r.pos); r.pos += 4; return v; }
    case 0x07: return r.f64(field);
    case 0x08: return r.str(field);
    case 0x09: return r.raw(r.u16(field), field);
    case 0x0a: {
      const n = r.u16(field);
      const out = [];
      for (let i = 0; i < n; i++) out.push(readValue(r, `${field}[${i}]`));
      return out;
    }
    case 0x0b: {
      const n = r.u16(field);
      const out = {};
      for (let i = 0; i < n; i++) {
        const key = r.str(`${field} key`);
        const item = readValue(r, `${field}.${key}`);
        Object.defineProperty(out, key, { value: item, enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
    default:
      throw new ClaspDecodeError(`unknown value type 0x${code.toString(16).padStart(2, "0")}`, r.pos - 1, field);
  }
}

function readValue(r, field) {
  return readValueData(r, r.u8(field), field);
}

function featuresByte(features, allowed = 0xfc) {
  let b = 0;
  for (const [name, bit] of FEATURE_BITS) if (features.includes(name)) b |= bit;
  return b & allowed;
}
function featureList(b, allowed = 0xfc) {
  return FEATURE_BITS.filter(([, bit]) => b & bit & allowed).map(([name]) => name);
}
function typeMask(types) {
  if (!types || types.length === 0) return 0xff;
  let m = 0;
  for (const [name, bit] of TYPE_MASK_BITS) if (types.includes(name)) m |= bit;
  return m;
}
function typeList(m) {
  if (m === 0xff) return [];
  return TYPE_MASK_BITS.filter(([, bit]) => m & bit).map(([name]) => name);
}

/** Default frame QoS of a message (docs/protocol.md §2.1). */
export function defaultQos(msg) {
  switch (msg.type) {
    case "SET": case "SUBSCRIBE": case "UNSUBSCRIBE": case "REPLAY": case "FEDERATION_SYNC": return 1;
    case "BUNDLE": return 2;
    case "PUBLISH": {
      const s = msg.signal;
      if (s === "param" || s === "event") return 1;
      if (s === "timeline") return 2;
      return 0;
    }
    default: return 0;
  }
}

function writeSignalInfo(w, s, withMeta) {
  w.str(s.address, "address");
  const st = SIGNALS.indexOf(s.signal_type ?? "event");
  w.u8(st < 0 ? 1 : st);
  const meta = withMeta ? s.meta : undefined;
  w.u8((s.datatype != null ? 1 : 0) | (s.access != null ? 2 : 0) | (meta != null ? 4 : 0));
  if (s.datatype != null) w.str(s.datatype, "datatype");
  if (s.access != null) w.str(s.access, "access");
  if (meta != null) {
    w.u8((meta.unit != null ? 1 : 0) | (meta.range != null ? 2 : 0) | (meta.default !== undefined ? 4 : 0) | (meta.description != null ? 8 : 0));
    if (meta.unit != null) w.str(meta.unit, "unit");
    if (meta.range != null) { w.f64(meta.range[0]); w.f64(meta.range[1]); }
    if (meta.default !== undefined) { const at = w.pos; w.u8(0); { const c = encodeValueData(w, meta.default, "meta.default"); w.buf[at] = c; } }
    if (meta.description != null) w.str(meta.description, "description");
  }
}

/** Encode a message object (`{type: "SET", address, value, ...}`, field names as in docs/protocol.md) to a payload. */
export function encodePayload(msg, w = new Writer()) {
  const code = MSG[msg.type];
  if (code === undefined) throw new ClaspEncodeError(`unknown message type ${JSON.stringify(msg.type)}`);
  w.u8(code);
  switch (msg.type) {
    case "HELLO":
      w.u8(msg.version ?? 1); w.u8(featuresByte(msg.features ?? ["param", "event", "stream", "gesture", "timeline"]));
      w.str(msg.name ?? "", "name"); w.str(msg.token ?? "", "token"); break;
    case "WELCOME":
      w.u8(msg.version ?? 1); w.u8(featuresByte(msg.features ?? [], 0xf8)); w.u64(msg.time ?? 0, "time");
      w.str(msg.session, "session"); w.str(msg.name ?? "", "name"); w.str(msg.token ?? "", "token"); break;
    case "SUBSCRIBE": {
      w.u32(msg.id, "id"); w.str(msg.pattern, "pattern"); w.u8(typeMask(msg.types));
      const o = msg.options ?? {};
      w.u8((o.max_rate != null ? 1 : 0) | (o.epsilon != null ? 2 : 0) | (o.history != null ? 4 : 0) | (o.window != null ? 8 : 0));
      if (o.max_rate != null) w.u32(o.max_rate, "max_rate");
      if (o.epsilon != null) w.f64(o.epsilon);
      if (o.history != null) w.u32(o.history, "history");
      if (o.window != null) w.u32(o.window, "window");
      break;
    }
    case "UNSUBSCRIBE": w.u32(msg.id, "id"); break;
    case "PUBLISH": {
      const signal = SIGNALS.indexOf(msg.signal ?? "event");
      if (signal < 0) throw new ClaspEncodeError(`unknown signal ${JSON.stringify(msg.signal)}`, "signal");
      const phase = PHASES.indexOf(msg.phase ?? "start");
      if (phase < 0) throw new ClaspEncodeError(`unknown gesture phase ${JSON.stringify(msg.phase)}`, "phase");
      w.u8((signal << 5) | (msg.timestamp != null ? 0x10 : 0) | (msg.id != null ? 0x08 : 0) | phase);
      w.str(msg.address, "address");
      if (msg.value !== undefined) {
        w.u8(1); const at = w.pos; w.u8(0); { const c = encodeValueData(w, msg.value, "value"); w.buf[at] = c; }
      } else if (msg.samples != null) {
        w.u8(2); w.count(msg.samples.length, "samples");
        for (const x of msg.samples) w.f64(Number(x));
      } else {
        w.u8(0);
      }
      if (msg.timestamp != null) w.u64(msg.timestamp, "timestamp");
      if (msg.id != null) w.u32(msg.id, "id");
      if (msg.rate != null) w.u32(msg.rate, "rate");
      break;
    }
    case "SET": {
      const at = w.pos;
      let flags = (msg.revision != null ? 0x80 : 0) | (msg.lock ? 0x40 : 0) | (msg.unlock ? 0x20 : 0) | (msg.ttl ? 0x10 : 0);
      w.u8(flags);
      w.str(msg.address, "address");
      const code = encodeValueData(w, msg.value, "value");
      w.buf[at] = flags | code;
      if (msg.revision != null) w.u64(msg.revision, "revision");
      if (msg.ttl) {
        const t = msg.ttl;
        const secs = t.secs ?? 0;
        if (!Number.isInteger(secs) || secs < 0 || secs > 0x7fffffff) throw new ClaspEncodeError(`ttl ${secs} s is out of range`, "ttl");
        w.u32(t.mode === "never" ? 0 : t.mode === "absolute" ? (0x80000000 + secs) : secs, "ttl");
      }
      break;
    }
    case "GET": case "QUERY":
      w.str(msg.type === "GET" ? msg.address : msg.pattern, msg.type === "GET" ? "address" : "pattern"); break;
    case "SNAPSHOT":
      w.count(msg.params.length, "params");
      for (const p of msg.params) {
        w.str(p.address, "address");
        const at = w.pos; w.u8(0); { const c = encodeValueData(w, p.value, "value"); w.buf[at] = c; }
        w.u64(p.revision ?? 0, "revision");
        w.u8((p.writer != null ? 1 : 0) | (p.timestamp != null ? 2 : 0));
        if (p.writer != null) w.str(p.writer, "writer");
        if (p.timestamp != null) w.u64(p.timestamp, "timestamp");
      }
      break;
    case "BUNDLE": {
      w.u8(msg.timestamp != null ? 0x80 : 0); w.count(msg.messages.length, "messages");
      if (msg.timestamp != null) w.u64(msg.timestamp, "timestamp");
      for (const inner of msg.messages) {
        const at = w.pos; w.u16(0);
        encodePayload(inner, w);
        const len = w.pos - at - 2;
        if (len > 0xffff) throw new ClaspEncodeError("bundle item longer than 65535 bytes", "messages");
        w.view.setUint16(at, len);
      }
      break;
    }
    case "SYNC":
      w.u8((msg.t2 != null ? 1 : 0) | (msg.t3 != null ? 2 : 0)); w.u64(msg.t1, "t1");
      if (msg.t2 != null) w.u64(msg.t2, "t2");
      if (msg.t3 != null) w.u64(msg.t3, "t3");
      break;
    case "PING": case "PONG": break;
    case "ACK":
      w.u8((msg.address != null ? 1 : 0) | (msg.revision != null ? 2 : 0) | (msg.locked != null ? 4 : 0) | (msg.holder != null ? 8 : 0) | (msg.correlation_id != null ? 0x10 : 0));
      if (msg.address != null) w.str(msg.address, "address");
      if (msg.revision != null) w.u64(msg.revision, "revision");
      if (msg.locked != null) w.u8(msg.locked ? 1 : 0);
      if (msg.holder != null) w.str(msg.holder, "holder");
      if (msg.correlation_id != null) w.u32(msg.correlation_id, "correlation_id");
      break;
    case "ERROR":
      w.u16(msg.code, "code"); w.str(msg.message ?? "", "message");
      w.u8((msg.address != null ? 1 : 0) | (msg.correlation_id != null ? 2 : 0));
      if (msg.address != null) w.str(msg.address, "address");
      if (msg.correlation_id != null) w.u32(msg.correlation_id, "correlation_id");
      break;
    case "ANNOUNCE":
      w.str(msg.namespace ?? "", "namespace"); w.count(msg.signals.length, "signals");
      for (const s of msg.signals) writeSignalInfo(w, s, true);
      break;
    case "RESULT":
      w.count(msg.signals.length, "signals");
      for (const s of msg.signals) writeSignalInfo(w, s, false);
      break;
    default:
      throw new ClaspEncodeError(`${msg.type} cannot be encoded by this module`);
  }
  return w;
}

/** Encode a message to one complete frame (Uint8Array); `qos` defaults to docs/protocol.md §2.1. */
export function encodeFrame(msg, qos = defaultQos(msg)) {
  const w = new Writer();
  w.pos = 4;
  encodePayload(msg, w);
  const len = w.pos - 4;
  if (len > 0xffff) throw new ClaspEncodeError(`payload of ${len} bytes is larger than 65535`);
  w.buf[0] = MAGIC;
  w.buf[1] = ((qos & 3) << 6) | 1;
  w.view.setUint16(2, len);
  return w.bytes();
}

function readSignalInfo(r, withMeta) {
  const s = { address: r.str("address") };
  const st = r.u8("signal_type");
  s.signal_type = SIGNALS[st] ?? "event";
  const opt = r.u8("signal options");
  if (opt & 1) s.datatype = r.str("datatype");
  if (opt & 2) s.access = r.str("access");
  if (withMeta && opt & 4) {
    const m = {};
    const mf = r.u8("meta flags");
    if (mf & 1) m.unit = r.str("unit");
    if (mf & 2) m.range = [r.f64("range_min"), r.f64("range_max")];
    if (mf & 4) m.default = readValue(r, "meta.default");
    if (mf & 8) m.description = r.str("description");
    s.meta = m;
  }
  return s;
}

/** Decode one payload (bytes[start:end]) to a message object. */
export function decodePayload(bytes, start = 0, end = bytes.length) {
  if (end <= start) throw new ClaspDecodeError("empty payload", start, "type");
  const first = bytes[start];
  if ((first >= 0x80 && first <= 0x8f) || first === 0xde || first === 0xdf) {
    throw new ClaspDecodeError("legacy MessagePack (v0) payloads are not supported by clasp-p2p.js", start, "type");
  }
  const r = new Reader(bytes, start, end);
  const type = MSG_NAMES[r.u8("type")];
  if (type === undefined) throw new ClaspDecodeError(`unknown message type 0x${first.toString(16).padStart(2, "0")}`, start, "type");
  const m = { type };
  switch (type) {
    case "HELLO":
      m.version = r.u8("version"); m.features = featureList(r.u8("features"));
      m.name = r.str("name"); { const t = r.str("token"); if (t) m.token = t; } break;
    case "WELCOME":
      m.version = r.u8("version"); m.features = featureList(r.u8("features"), 0xf8); m.time = r.u64("time");
      m.session = r.str("session"); m.name = r.str("name"); { const t = r.str("token"); if (t) m.token = t; } break;
    case "ANNOUNCE": {
      m.namespace = r.str("namespace"); const n = r.u16("signals"); m.signals = [];
      for (let i = 0; i < n; i++) m.signals.push(readSignalInfo(r, true));
      break;
    }
    case "FEDERATION_SYNC": {
      const at = r.pos; m.op = r.u8("op");
      if (!FEDERATION_OPS.includes(m.op)) throw new ClaspDecodeError(`unknown federation op ${m.op}`, at, "op");
      const pc = r.u16("patterns"); m.patterns = [];
      for (let i = 0; i < pc; i++) m.patterns.push(r.str("pattern"));
      const rc = r.u16("revisions"); m.revisions = {};
      for (let i = 0; i < rc; i++) { const k = r.str("revision key"); m.revisions[k] = r.u64("revision"); }
      const f = r.u8("flags");
      if (f & 0x80) m.since_revision = r.u64("since_revision");
      if (f & 0x40) m.origin = r.str("origin");
      break;
    }
    case "SUBSCRIBE": {
      m.id = r.u32("id"); m.pattern = r.str("pattern"); m.types = typeList(r.u8("type_mask"));
      const o = r.u8("options");
      if (o) {
        m.options = {};
        if (o & 1) m.options.max_rate = r.u32("max_rate");
        if (o & 2) m.options.epsilon = r.f64("epsilon");
        if (o & 4) m.options.history = r.u32("history");
        if (o & 8) m.options.window = r.u32("window");
      }
      break;
    }
    case "UNSUBSCRIBE": m.id = r.u32("id"); break;
    case "PUBLISH": {
      const f = r.u8("flags");
      m.address = r.str("address");
      m.signal = SIGNALS[f >> 5] ?? "event";
      m.phase = PHASES[f & 7] ?? "start";
      const ind = r.u8("indicator");
      if (ind === 1) m.value = readValue(r, "value");
      else if (ind === 2) {
        const n = r.u16("samples");
        r.need(n * 8, "samples");
        const s = new Float64Array(n);
        for (let i = 0; i < n; i++) s[i] = r.f64("samples");
        m.samples = s;
      }
      if (f & 0x10) m.timestamp = r.u64("timestamp");
      if (f & 0x08) m.id = r.u32("id");
      if (r.remaining >= 4) m.rate = r.u32("rate");
      break;
    }
    case "SET": {
      const f = r.u8("flags");
      m.address = r.str("address");
      m.value = readValueData(r, f & 0x0f, "value");
      m.lock = !!(f & 0x40); m.unlock = !!(f & 0x20);
      if (f & 0x80) m.revision = r.u64("revision");
      if (f & 0x10) {
        const t = r.u32("ttl");
        m.ttl = t === 0 ? { mode: "never" } : { mode: t & 0x80000000 ? "absolute" : "sliding", secs: t & 0x7fffffff };
      }
      break;
    }
    case "GET": m.address = r.str("address"); break;
    case "QUERY": m.pattern = r.str("pattern"); break;
    case "SNAPSHOT": {
      const n = r.u16("params"); m.params = [];
      for (let i = 0; i < n; i++) {
        const p = { address: r.str("address") };
        p.value = readValue(r, "value");
        p.revision = r.u64("revision");
        const o = r.u8("param options");
        if (o & 1) p.writer = r.str("writer");
        if (o & 2) p.timestamp = r.u64("timestamp");
        m.params.push(p);
      }
      break;
    }
    case "REPLAY": {
      const f = r.u8("flags"); m.pattern = r.str("pattern");
      if (f & 0x80) m.from = r.u64("from");
      if (f & 0x40) m.to = r.u64("to");
      if (f & 0x20) m.limit = r.u32("limit");
      m.types = typeList(r.u8("type_mask"));
      break;
    }
    case "BUNDLE": {
      const f = r.u8("flags"); const n = r.u16("messages");
      if (f & 0x80) m.timestamp = r.u64("timestamp");
      m.messages = [];
      for (let i = 0; i < n; i++) {
        const len = r.u16("bundle item length");
        r.need(len, "bundle item");
        const inner = r.pos;
        if (bytes[inner] >= 0x80 && bytes[inner] <= 0x8f || bytes[inner] === 0xde || bytes[inner] === 0xdf) {
          throw new ClaspDecodeError("bundle items must be binary payloads", inner, "bundle item");
        }
        m.messages.push(decodePayload(bytes, inner, inner + len));
        r.pos = inner + len;
      }
      break;
    }
    case "SYNC": {
      const f = r.u8("flags"); m.t1 = r.u64("t1");
      if (f & 1) m.t2 = r.u64("t2");
      if (f & 2) m.t3 = r.u64("t3");
      break;
    }
    case "PING": case "PONG": break;
    case "ACK": {
      const f = r.u8("flags");
      if (f & 1) m.address = r.str("address");
      if (f & 2) m.revision = r.u64("revision");
      if (f & 4) m.locked = r.u8("locked") !== 0;
      if (f & 8) m.holder = r.str("holder");
      if (f & 0x10) m.correlation_id = r.u32("correlation_id");
      break;
    }
    case "ERROR": {
      m.code = r.u16("code"); m.message = r.str("message");
      const f = r.u8("flags");
      if (f & 1) m.address = r.str("address");
      if (f & 2) m.correlation_id = r.u32("correlation_id");
      break;
    }
    case "RESULT": {
      const n = r.u16("signals"); m.signals = [];
      for (let i = 0; i < n; i++) m.signals.push(readSignalInfo(r, false));
      break;
    }
  }
  return m;
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new ClaspDecodeError(`expected binary data, got ${typeof data}`, 0, "frame");
}

/** Decode the frame at `offset`: returns `{message, qos, size}`; trailing bytes after it are not read. */
export function decodeFrame(data, offset = 0) {
  const bytes = toBytes(data);
  if (bytes.length - offset < 4) throw new ClaspDecodeError(`incomplete frame header: ${bytes.length - offset} of 4 bytes`, offset, "header");
  if (bytes[offset] !== MAGIC) throw new ClaspDecodeError(`bad magic 0x${bytes[offset].toString(16).padStart(2, "0")}, expected 0x53`, offset, "magic");
  const flags = bytes[offset + 1];
  const header = flags & 0x20 ? 12 : 4;
  const len = (bytes[offset + 2] << 8) | bytes[offset + 3];
  if (offset + header + len > bytes.length) {
    throw new ClaspDecodeError(`incomplete frame: ${header + len} bytes declared, ${bytes.length - offset} present`, offset, "payload_len");
  }
  if (len === 0) throw new ClaspDecodeError("empty payload", offset + header, "payload");
  const message = decodePayload(bytes, offset + header, offset + header + len);
  return { message, qos: flags >> 6, size: header + len };
}

/** Decode every frame of a DataChannel message (one or more frames back to back). */
export function decodeFrames(data) {
  const bytes = toBytes(data);
  const out = [];
  let offset = 0;
  while (offset < bytes.length) {
    const { message, size } = decodeFrame(bytes, offset);
    out.push(message);
    offset += size;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Address patterns (docs/protocol.md §9.2: `*` one segment, `**` zero or more, `*` inside a segment)

function segmentRegex(seg) {
  return new RegExp("^" + seg.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("[^/]*") + "$");
}

/** Compile a subscription pattern to a function `address -> boolean` with the router's live semantics. */
export function compilePattern(pattern) {
  if (typeof pattern !== "string" || !pattern.startsWith("/")) throw new ClaspError(`pattern must start with '/': ${JSON.stringify(pattern)}`);
  const parts = pattern.slice(1).split("/");
  parts.forEach((seg, i) => {
    if (seg === "" && i !== parts.length - 1) throw new ClaspError(`empty segment in pattern ${JSON.stringify(pattern)}`);
  });
  const segs = parts.map((s) => (s === "**" ? 2 : s === "*" ? 1 : s.includes("*") ? segmentRegex(s) : s));
  const match = (addr, i, j) => {
    if (i === segs.length) return j === addr.length;
    const s = segs[i];
    if (s === 2) {
      for (let k = j; k <= addr.length; k++) if (match(addr, i + 1, k)) return true;
      return false;
    }
    if (j >= addr.length) return false;
    if (s === 1 || (s instanceof RegExp ? s.test(addr[j]) : s === addr[j])) return match(addr, i + 1, j + 1);
    return false;
  };
  return (address) => match(address.slice(1).split("/"), 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Small helpers

class Emitter {
  constructor() { this._handlers = new Map(); }
  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) { this._handlers.get(event)?.delete(fn); }
  _emit(event, ...args) {
    for (const fn of [...(this._handlers.get(event) ?? [])]) {
      try { fn(...args); } catch (err) { if (event !== "error") this._emit("error", err); else console.error(err); }
    }
  }
}

function uuid4() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function withTimeout(promise, ms, makeError) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(makeError()), ms); }),
  ]);
}

function nowUs() { return Math.round((performance.timeOrigin + performance.now()) * 1000); }

// ---------------------------------------------------------------------------------------------
// Relay connection

export const SIGNAL_PREFIX = "/clasp/p2p/signal/";
export const ANNOUNCE_ADDRESS = "/clasp/p2p/announce";
export const PRESENCE_PREFIX = "/clasp/p2p/presence/";

/** A CLASP client connection to a relay over WebSocket (HELLO, subscriptions, SET, PUBLISH). */
export class RelayConnection extends Emitter {
  constructor(url, { name = "clasp-p2p.js", token = "" } = {}) {
    super();
    this.url = url;
    this.name = name;
    this.token = token;
    this.sessionId = null;
    this.ws = null;
    this._subs = new Map();
    this._nextSub = 1;
  }

  /** Open the WebSocket, send HELLO and wait for WELCOME. */
  async connect(timeoutMs = 10000) {
    const ws = new WebSocket(this.url, "clasp");
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    const welcome = new Promise((resolve, reject) => {
      ws.onopen = () => ws.send(encodeFrame({ type: "HELLO", version: 1, name: this.name, token: this.token }));
      ws.onerror = () => reject(new ClaspError(`cannot connect to relay ${this.url}`));
      ws.onclose = (ev) => reject(new ClaspError(`relay ${this.url} closed the connection (${ev.code} ${ev.reason})`));
      ws.onmessage = (ev) => {
        let msg;
        try { msg = decodeFrame(ev.data).message; } catch (err) { reject(err); return; }
        if (msg.type === "WELCOME") resolve(msg);
      };
    });
    const msg = await withTimeout(welcome, timeoutMs, () => new ClaspError(`no WELCOME from ${this.url} within ${timeoutMs} ms`));
    this.sessionId = msg.session;
    this.welcome = msg;
    ws.onmessage = (ev) => this._onData(ev.data);
    ws.onerror = () => {};
    ws.onclose = (ev) => this._emit("close", ev.code, ev.reason);
    return this;
  }

  get connected() { return this.ws !== null && this.ws.readyState === 1; }

  send(msg) {
    if (!this.connected) throw new ClaspError("relay connection is not open");
    this.ws.send(encodeFrame(msg));
  }

  /** Subscribe to `pattern`; `callback(value, address, message)` gets SETs, PUBLISHes and snapshot params. */
  subscribe(pattern, callback, { types } = {}) {
    const id = this._nextSub++;
    this._subs.set(id, { match: compilePattern(pattern), callback, types: types ?? null });
    this.send({ type: "SUBSCRIBE", id, pattern, types: types ?? [] });
    return id;
  }

  unsubscribe(id) {
    if (this._subs.delete(id) && this.connected) this.send({ type: "UNSUBSCRIBE", id });
  }

  set(address, value, { ttl } = {}) { this.send({ type: "SET", address, value, ttl }); }
  emit(address, value) { this.send({ type: "PUBLISH", address, signal: "event", value }); }

  /** Send a §10 signal map to session `target`. */
  sendSignal(target, signal) {
    this.send({ type: "PUBLISH", address: SIGNAL_PREFIX + target, signal: "event", value: { ...signal, from: this.sessionId } });
  }

  close() { if (this.ws) this.ws.close(1000); }

  _onData(data) {
    let msg;
    try { msg = decodeFrame(data).message; } catch (err) { this._emit("error", err); return; }
    this._dispatchMessage(msg);
  }

  _dispatchMessage(msg) {
    switch (msg.type) {
      case "PUBLISH":
        if (msg.address === SIGNAL_PREFIX + this.sessionId) {
          if (msg.value && typeof msg.value === "object") this._emit("signal", msg.value);
          return;
        }
        this._deliver(msg.address, msg.samples ?? msg.value, msg.signal, msg);
        break;
      case "SET": this._deliver(msg.address, msg.value, "param", msg); break;
      case "SNAPSHOT": for (const p of msg.params) this._deliver(p.address, p.value, "param", msg); break;
      case "BUNDLE": for (const m of msg.messages) this._dispatchMessage(m); break;
      case "PING": this.send({ type: "PONG" }); break;
      case "ERROR": this._emit("error", new ClaspError(`relay error ${msg.code}: ${msg.message}${msg.address ? ` (${msg.address})` : ""}`)); break;
      default: break;
    }
  }

  _deliver(address, value, signal, msg) {
    for (const sub of this._subs.values()) {
      if (sub.types && !sub.types.includes(signal)) continue;
      if (!sub.match(address)) continue;
      try { sub.callback(value, address, msg); } catch (err) { this._emit("error", err); }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Peers

export const UNRELIABLE_LABEL = "clasp";
export const RELIABLE_LABEL = "clasp-reliable";
const CONTROL_LABEL = "clasp-control";
const CONTROL_CHANNEL_ID = 1023;
const UNRELIABLE_BATCH = 1160;   // one SCTP packet's user data in aiortc (docs/reference.md)
const RELIABLE_BATCH = 16384;
const HIGH_WATER = 1 << 20;

// "clock": this side answers SYNC requests on the control channel (a clasp_fast peer then keeps a clock estimate).
const LOCAL_FEATURES = ["batch", "keepalive", "clock"];
const BASE_FEATURES = ["webrtc", "reliable", "unreliable", "presence", ...LOCAL_FEATURES];

class Channel {
  constructor(peer, dc, prefix, limit) {
    this.peer = peer;
    this.dc = dc;
    this.prefix = prefix;
    this.limit = limit;
    this.pending = [];
    this.pendingSize = 0;
    this.scheduled = false;
    this.framesSent = 0;
    this.messagesSent = 0;
    this.framesReceived = 0;
    this.messagesReceived = 0;
    dc.binaryType = "arraybuffer";
    this.opened = dc.readyState === "open" ? Promise.resolve() : new Promise((resolve, reject) => {
      dc.addEventListener("open", () => resolve(), { once: true });
      dc.addEventListener("close", () => reject(new ClaspTransportError(`channel ${dc.label} closed before opening`, peer.sessionId, "channel open")), { once: true });
    });
    this.opened.catch(() => {});
    this.reliable = !(dc.ordered === false || dc.maxRetransmits != null || dc.maxPacketLifeTime != null);
    dc.addEventListener("message", (ev) => peer._onData(this, ev.data));
    dc.addEventListener("close", () => peer._onChannelClosed(this));
  }

  send(frame) {
    this.framesSent++;
    if (!this.peer.batching) { this.messagesSent++; this.dc.send(frame); return; }
    if (this.pendingSize + frame.length > this.limit) this.flush();
    this.pending.push(frame);
    this.pendingSize += frame.length;
    if (!this.scheduled) { this.scheduled = true; queueMicrotask(() => this.flush()); }
  }

  flush() {
    this.scheduled = false;
    if (this.pending.length === 0 || this.dc.readyState !== "open") return;
    let out;
    if (this.pending.length === 1) out = this.pending[0];
    else {
      out = new Uint8Array(this.pendingSize);
      let at = 0;
      for (const f of this.pending) { out.set(f, at); at += f.length; }
    }
    this.pending = [];
    this.pendingSize = 0;
    this.messagesSent++;
    this.dc.send(out);
  }
}

/** One WebRTC connection to another CLASP peer. */
export class Peer extends Emitter {
  constructor(owner, sessionId, info) {
    super();
    this.owner = owner;
    this.sessionId = sessionId;
    this.clientId = info?.clientId ?? null;
    this.remoteFeatures = [];
    this.state = "new";
    this.role = null;
    this.correlationId = null;
    this.closeReason = null;
    this.params = new Map();
    this._channels = new Map();
    this._routes = [];
    this._subs = new Map();
    this._nextSub = 1;
    this._gets = [];
    this._pendingCandidates = [];
    this._candidates = Promise.resolve();  // remote candidates are applied one after the other, in order
    this._remoteSet = false;
    this._remoteDisconnect = null;  // a "disconnected" that came during set-up, applied once connected
    this._disconnectedSent = false;
    this._lastReceived = 0;
    this._control = null;
    // DataChannel messages that arrive before the "connection" event handlers had their turn (the
    // peer may send as soon as its side is open): kept and delivered by _start(), in order.
    this._held = [];
    const cfg = { iceServers: [], ...(owner.rtcConfig ?? {}) };
    this.pc = new RTCPeerConnection(cfg);
    this.pc.addEventListener("icecandidate", (ev) => this._onLocalCandidate(ev.candidate));
    this.pc.addEventListener("datachannel", (ev) => this._onRemoteChannel(ev.channel));
    this.pc.addEventListener("connectionstatechange", () => {
      const s = this.pc.connectionState;
      if ((s === "failed" || s === "closed") && (this.state === "connected" || this.state === "connecting")) this._shutdown(null, `peer connection ${s}`);
    });
    this._connected = new Promise((resolve, reject) => { this._resolveConnected = resolve; this._rejectConnected = reject; });
    this._connected.catch(() => {});
  }

  /** Features the peer listed in its offer/answer (or announce/presence). */
  get features() { return this.remoteFeatures.length ? this.remoteFeatures : (this.owner._known.get(this.sessionId)?.features ?? []); }
  get connected() { return this.state === "connected"; }
  /** True when several frames share one DataChannel message toward this peer. */
  get batching() { return this.owner.batching && this.remoteFeatures.includes("batch"); }
  /** Labels of the open DataChannels. */
  get channels() { return [...this._channels.keys()]; }

  // -- sending --------------------------------------------------------------------------

  /** Send a ready-made message object; the channel follows its address prefix, then its QoS. */
  send(msg, { reliable } = {}) {
    if (this.state !== "connected") throw new ClaspTransportError(`connection is ${this.state}`, this.sessionId, "send");
    const qos = defaultQos(msg);
    const frame = encodeFrame(msg, qos);
    let ch = null;
    if (reliable === undefined && msg.address) {
      for (const [prefix, c] of this._routes) {
        if (msg.address === prefix || msg.address.startsWith(prefix.endsWith("/") ? prefix : prefix + "/")) { ch = c; break; }
      }
    }
    if (ch === null) {
      const useReliable = reliable ?? qos !== QOS.fire;
      ch = this._channels.get(useReliable ? RELIABLE_LABEL : UNRELIABLE_LABEL);
    }
    ch.send(frame);
    if (ch.dc.bufferedAmount > HIGH_WATER) {
      return new Promise((resolve) => ch.dc.addEventListener("bufferedamountlow", () => resolve(), { once: true }));
    }
    return Promise.resolve();
  }

  /**
   * Write a param on the peer (reliable channel); returns the revision this side now holds. A value
   * that cannot be encoded, or a connection that is not open, throws and changes nothing here.
   */
  set(address, value) {
    this.send({ type: "SET", address, value });
    return this._store(address, value, this.owner.sessionId);
  }

  /** Send an event (reliable channel). */
  emit(address, value) { return this.send({ type: "PUBLISH", address, signal: "event", value }); }

  /** Send stream samples (Float64Array, Float32Array or an array of numbers) or one value (unreliable channel). */
  stream(address, samples, { rate } = {}) {
    const isSamples = samples instanceof Float64Array || samples instanceof Float32Array
      || (Array.isArray(samples) && samples.every((x) => typeof x === "number"));
    const msg = isSamples ? { type: "PUBLISH", address, signal: "stream", samples, rate } : { type: "PUBLISH", address, signal: "stream", value: samples, rate };
    return this.send(msg);
  }

  /** Send one gesture phase ("start", "move", "end", "cancel") on the unreliable channel. */
  gesture(address, id, phase, value) { return this.send({ type: "PUBLISH", address, signal: "gesture", id, phase, value }); }

  /** Ask the peer for its value of `address`; rejects when it holds none or does not answer in time. */
  get(address, { timeout = 5000 } = {}) {
    return new Promise((resolve, reject) => {
      const entry = { address, resolve, reject };
      entry.timer = setTimeout(() => {
        this._gets = this._gets.filter((g) => g !== entry);
        reject(new ClaspTransportError(`no answer to GET ${address} within ${timeout} ms`, this.sessionId, "get"));
      }, timeout);
      this._gets.push(entry);
      try { this.send({ type: "GET", address }, { reliable: true }); } catch (err) { clearTimeout(entry.timer); this._gets = this._gets.filter((g) => g !== entry); reject(err); }
    });
  }

  /** Counters per DataChannel label: frames and DataChannel messages sent and received. */
  stats() {
    const channels = {};
    for (const [label, ch] of this._channels) {
      channels[label] = { framesSent: ch.framesSent, messagesSent: ch.messagesSent, framesReceived: ch.framesReceived, messagesReceived: ch.messagesReceived };
    }
    return { state: this.state, role: this.role, batching: this.batching, features: this.remoteFeatures, channels };
  }

  /** Hand pending batches to the DataChannels now. */
  flush() { for (const ch of this._channels.values()) ch.flush(); }

  /** Open a DataChannel for messages under `prefix` with its own reliability; resolves when it is open. */
  async createDataChannel(prefix, { ordered = true, maxRetransmits, maxPacketLifeTime, label } = {}) {
    if (typeof prefix !== "string" || !prefix.startsWith("/")) throw new ClaspError(`prefix must start with '/', got ${JSON.stringify(prefix)}`);
    const name = label ?? `clasp${prefix}`;
    if (this._channels.has(name)) throw new ClaspError(`a channel labelled ${name} exists already`);
    const opts = { ordered, protocol: prefix };
    if (maxRetransmits != null) opts.maxRetransmits = maxRetransmits;
    if (maxPacketLifeTime != null) opts.maxPacketLifeTime = maxPacketLifeTime;
    const ch = this._addChannel(this.pc.createDataChannel(name, opts));
    await withTimeout(ch.opened, 10000, () => new ClaspTransportError(`channel ${name} did not open`, this.sessionId, "channel open"));
    return name;
  }

  // -- receiving ------------------------------------------------------------------------

  /** Call `callback(value, address, message)` for SETs and PUBLISHes from the peer matching `pattern`. */
  on(pattern, callback, { types } = {}) {
    if (typeof callback !== "function") return super.on(pattern, callback);
    if (!pattern.startsWith("/")) return super.on(pattern, callback);
    const id = this._nextSub++;
    this._subs.set(id, { match: compilePattern(pattern), callback, types: types ?? null });
    return id;
  }

  /** Remove a subscription made with `on(pattern, ...)`, or an event handler. */
  off(idOrEvent, fn) {
    if (typeof idOrEvent === "number") this._subs.delete(idOrEvent);
    else super.off(idOrEvent, fn);
  }

  /**
   * Close the connection without losing data either way: hand pending data to the DataChannels and wait
   * until they have sent it, tell the peer (`disconnected` with `reason`), keep delivering what it still
   * sends until it has closed its side, then close. Bounded by the `closeTimeout` option.
   */
  async close(reason = "User requested disconnect") {
    if (this.state === "closed" || this.state === "failed") return;
    if (this.state === "closing") { await this._closed; return; }
    if (this.state !== "connected") { await this._shutdown(reason, reason); return; }
    await this._teardown(reason, reason);
  }

  // -- internals ------------------------------------------------------------------------

  _store(address, value, writer) {
    const old = this.params.get(address);
    const revision = old ? old.revision + 1 : 1;
    this.params.set(address, { address, value, revision, writer: writer ?? undefined, timestamp: nowUs() });
    return revision;
  }

  _onData(ch, data) {
    this._lastReceived = performance.now();
    if (this._held !== null) { this._held.push([ch, data]); return; }
    if (typeof data === "string") { this.owner._emit("error", new ClaspDecodeError("text DataChannel message: CLASP travels as binary", 0, "message")); return; }
    const bytes = new Uint8Array(data);
    ch.messagesReceived++;
    let offset = 0;
    while (offset < bytes.length) {
      let frame;
      try { frame = decodeFrame(bytes, offset); } catch (err) { this.owner._emit("error", err); return; }
      offset += frame.size;
      ch.framesReceived++;
      try { this._apply(frame.message); } catch (err) { this.owner._emit("error", err); }
    }
  }

  /** Start delivering: first what arrived before the connection was handed to the application. */
  _start() {
    const held = this._held;
    if (held === null) return;
    this._held = null;
    for (const [ch, data] of held) this._onData(ch, data);
  }

  _apply(msg) {
    switch (msg.type) {
      case "SET":
        this._store(msg.address, msg.value, this.sessionId);
        this._dispatch(msg.address, msg.value, "param", msg); break;
      case "PUBLISH":
        this._dispatch(msg.address, msg.samples ?? msg.value ?? null, msg.signal, msg); break;
      case "GET": {
        const p = this.params.get(msg.address);
        this.send({ type: "SNAPSHOT", params: p ? [p] : [] }, { reliable: true });
        break;
      }
      case "SNAPSHOT": {
        const entry = this._gets.shift();
        if (!entry) break;
        clearTimeout(entry.timer);
        const p = msg.params.find((x) => x.address === entry.address);
        if (p) entry.resolve(p.value);
        else entry.reject(new ClaspError(`peer ${this.sessionId} holds no value for ${entry.address}`));
        break;
      }
      case "BUNDLE": for (const m of msg.messages) this._apply(m); break;
      case "PING": this.send({ type: "PONG" }, { reliable: true }); break;
      default: break;
    }
  }

  _dispatch(address, value, signal, msg) {
    for (const sub of this._subs.values()) {
      if (sub.types && !sub.types.includes(signal)) continue;
      if (!sub.match(address)) continue;
      try { sub.callback(value, address, msg); } catch (err) { this.owner._emit("error", err); }
    }
  }

  _addChannel(dc) {
    const prefix = dc.protocol && dc.protocol.startsWith("/") ? dc.protocol : null;
    const unreliable = dc.ordered === false || dc.maxRetransmits != null || dc.maxPacketLifeTime != null;
    const ch = new Channel(this, dc, prefix, unreliable ? UNRELIABLE_BATCH : RELIABLE_BATCH);
    this._channels.set(dc.label, ch);
    if (prefix) {
      this._routes.push([prefix, ch]);
      this._routes.sort((a, b) => b[0].length - a[0].length);
    }
    if (dc.label === RELIABLE_LABEL) ch.opened.then(() => this._onReliableOpen(), () => {});
    return ch;
  }

  _onRemoteChannel(dc) {
    if (dc.label === CONTROL_LABEL) return;
    this._addChannel(dc);
  }

  _onChannelClosed(ch) {
    // The peer reset the stream behind its data: end as if it had said "disconnected".
    if (ch.dc.label === RELIABLE_LABEL && this.state === "connected") this._teardown("reliable channel closed", "closed by the peer");
  }

  _createControlChannel() {
    if (!this.remoteFeatures.includes("keepalive") || this._control) return;
    const dc = this.pc.createDataChannel(CONTROL_LABEL, { negotiated: true, id: CONTROL_CHANNEL_ID });
    dc.binaryType = "arraybuffer";
    dc.addEventListener("message", (ev) => {
      const receivedUs = nowUs();
      this._lastReceived = performance.now();
      if (typeof ev.data === "string") return;
      try {
        for (const m of decodeFrames(ev.data)) {
          if (dc.readyState !== "open") break;
          if (m.type === "PING") dc.send(encodeFrame({ type: "PONG" }));
          else if (m.type === "SYNC" && m.t2 == null && m.t3 == null) {
            dc.send(encodeFrame({ type: "SYNC", t1: m.t1, t2: receivedUs, t3: nowUs() }));
          }
        }
      } catch (err) { this.owner._emit("error", err); }
    });
    this._control = dc;
  }

  async _onReliableOpen() {
    if (this.state !== "connecting") return;
    await Promise.all([UNRELIABLE_LABEL, RELIABLE_LABEL].map((l) => this._waitChannel(l)));
    if (this.state !== "connecting") return;
    this.state = "connected";
    this._signal({ type: "connected" });
    this._resolveConnected(this);
    // After the callers of connectToPeer / the "peer" event had their turn to use the connection.
    if (this._remoteDisconnect !== null) setTimeout(() => this._teardown(this._remoteDisconnect, "closed by the peer"), 0);
  }

  async _waitChannel(label) {
    for (let i = 0; i < 300 && !this._channels.has(label); i++) await new Promise((r) => setTimeout(r, 10));
    const ch = this._channels.get(label);
    if (!ch) throw new ClaspTransportError(`the peer opened no ${label} channel`, this.sessionId, "channel open");
    await ch.opened;
  }

  _signal(fields) {
    try { this.owner.relay.sendSignal(this.sessionId, { ...fields, correlation_id: this.correlationId }); }
    catch (err) { this.owner._emit("error", err); }
  }

  _onLocalCandidate(candidate) {
    if (!candidate || !candidate.candidate) return;
    const init = this.owner._rewriteCandidate(candidate);
    if (!init) return;
    this._signal({
      type: "ice_candidate",
      candidate: JSON.stringify({ candidate: init.candidate, sdpMid: init.sdpMid ?? null, sdpMLineIndex: init.sdpMLineIndex ?? null, usernameFragment: init.usernameFragment ?? null }),
    });
  }

  _remoteCandidate(text) {
    this._pendingCandidates.push(text);
    if (this._remoteSet) this._applyCandidates();
  }

  _remoteDescriptionSet() {
    this._remoteSet = true;
    this._applyCandidates();
  }

  _applyCandidates() {
    const batch = this._pendingCandidates.splice(0);
    this._candidates = this._candidates.then(async () => { for (const c of batch) await this._addRemoteCandidate(c); });
    return this._candidates;
  }

  async _addRemoteCandidate(text) {
    let init;
    try { init = JSON.parse(text); } catch { this.owner._emit("error", new ClaspError(`ICE candidate is not JSON: ${text}`)); return; }
    if (!init || typeof init.candidate !== "string") return;
    if (!this.owner._acceptRemoteCandidate(init.candidate)) return;
    if (init.sdpMid == null && init.sdpMLineIndex == null) init.sdpMid = "0";
    try { await this.pc.addIceCandidate(init); } catch (err) { this.owner._emit("error", err); }
  }

  async _offer(timeoutMs) {
    this.role = "offerer";
    this.state = "connecting";
    this.correlationId = `${this.owner.sessionId}-${this.sessionId}-${uuid4()}`;
    this._addChannel(this.pc.createDataChannel(UNRELIABLE_LABEL, { ordered: false, maxRetransmits: 0 }));
    this._addChannel(this.pc.createDataChannel(RELIABLE_LABEL));
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this._signal({ type: "offer", sdp: offer.sdp, features: this.owner.localFeatures });
    return this._waitConnected(timeoutMs, "answer");
  }

  async _answer(offer, timeoutMs) {
    this.role = "answerer";
    this.state = "connecting";
    this.correlationId = offer.correlation_id;
    this.remoteFeatures = Array.isArray(offer.features) ? offer.features.filter((f) => typeof f === "string") : [];
    await this.pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    this._remoteDescriptionSet();
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this._signal({ type: "answer", sdp: answer.sdp, features: this.owner.localFeatures });
    this._createControlChannel();
    return this._waitConnected(timeoutMs, "ice");
  }

  async _waitConnected(timeoutMs, step) {
    try {
      return await withTimeout(this._connected, timeoutMs, () => new ClaspTransportError(`connection not established within ${timeoutMs} ms`, this.sessionId, this.pc.remoteDescription ? "ice" : step));
    } catch (err) {
      await this._shutdown(null, err.message, "failed");
      throw err;
    }
  }

  async _onSignal(signal) {
    const kind = signal.type;
    if (signal.correlation_id !== this.correlationId) return;
    if (kind === "disconnected") {
      const reason = signal.reason ? String(signal.reason) : "remote disconnected";
      if (this.state === "connected") { await this._teardown(reason, "closed by the peer"); return; }
      if (this.state === "connecting" && this._remoteSet) { this._remoteDisconnect = reason; return; }  // the peer may have sent data already
      if (this.state !== "connecting") return;  // closing: we are ending it too
      this._rejectConnected(new ClaspTransportError(`the peer ended the set-up: ${reason}`, this.sessionId, this.role === "offerer" ? "offer" : "answer"));
      await this._shutdown(null, reason);
      return;
    }
    if (kind === "answer" && this.role === "offerer" && !this._answerSeen) {
      this._answerSeen = true;
      this.remoteFeatures = Array.isArray(signal.features) ? signal.features.filter((f) => typeof f === "string") : [];
      await this.pc.setRemoteDescription({ type: "answer", sdp: signal.sdp });
      this._remoteDescriptionSet();
      this._createControlChannel();
    } else if (kind === "ice_candidate") {
      this._remoteCandidate(String(signal.candidate));
    }
  }

  /** Whether the peer still answers on this connection: a PING must bring back anything within `timeoutMs`. */
  async _probe(timeoutMs) {
    if (this.state !== "connected") return false;
    const started = performance.now();
    const ping = encodeFrame({ type: "PING" });
    try {
      if (this._control?.readyState === "open") this._control.send(ping);
      else this._channels.get(RELIABLE_LABEL)?.dc.send(ping);
    } catch { return false; }
    while (this.state === "connected" && performance.now() - started < timeoutMs) {
      if (this._lastReceived > started) return true;
      await new Promise((r) => setTimeout(r, 10));
    }
    return false;
  }

  _sendDisconnected(reason) {
    if (this._disconnectedSent || !this.correlationId) return;
    this._disconnectedSent = true;
    this._signal({ type: "disconnected", reason });
  }

  /** True once every reliable channel has closed or the peer connection is gone. */
  _peerGone() {
    if (this.pc.connectionState === "closed" || this.pc.connectionState === "failed") return true;
    return [...this._channels.values()].every((ch) => !ch.reliable || ch.dc.readyState === "closed");
  }

  async _until(predicate, deadline) {
    while (!predicate() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  // Ends a connection that was up without losing data: stop sending, let our data leave, send our
  // "disconnected" (a browser discards what arrives on a channel it closes itself, so it leaves the
  // closing to the peer), keep delivering until the peer has closed its side or closeTimeout passed.
  async _teardown(closeReason, ourReason) {
    if (this.state !== "connected") return;
    this.state = "closing";
    this.closeReason = closeReason;
    let done;
    this._closed = new Promise((r) => { done = r; });
    const deadline = performance.now() + this.owner.closeTimeout;
    this.flush();
    await this._until(() => [...this._channels.values()].every((ch) => ch.dc.readyState !== "open" || ch.dc.bufferedAmount === 0), deadline);
    this._sendDisconnected(ourReason);
    await this._until(() => this._peerGone(), deadline);
    this.state = "closed";
    this._finish();
    done();
  }

  // Ends the connection at once (set-up failures, a dead peer connection).
  async _shutdown(reason, closeReason, final = "closed") {
    if (this.state === "closed" || this.state === "failed" || this.state === "closing") return;
    this.state = final;
    this.closeReason = closeReason;
    if (reason !== null) this._sendDisconnected(reason);
    this._finish();
  }

  _finish() {
    this._start();
    for (const g of this._gets.splice(0)) { clearTimeout(g.timer); g.reject(new ClaspTransportError("connection closed", this.sessionId, "get")); }
    try { this.pc.close(); } catch { /* already closed */ }
    this._rejectConnected(new ClaspTransportError(`closed: ${this.closeReason}`, this.sessionId, "closed"));
    this.owner._peerClosed(this);
    this._emit("close", this.closeReason);
  }
}

/**
 * CLASP P2P for browsers: discovery and signaling through a relay, WebRTC connections to peers.
 *
 * Options: `signaling` (relay URL), `clientId` (a name others connect to; default random),
 * `rtcConfig` (RTCConfiguration; default no ICE servers), `name`, `accept(info) -> bool|Promise<bool>`,
 * `presenceInterval` (seconds, default 5), `batching` (default true), `connectTimeout` (ms, default 30000),
 * `closeTimeout` (ms, default 2000: how long closing waits for data to leave and for the peer to close its side,
 * and how long a live connection has to answer a probe when an offer claims its peer's session),
 * `hostCandidateAddress` (e.g. "127.0.0.1": IPv4 UDP host candidates are rewritten to this address and
 * every other local and remote candidate is dropped — for peers on one machine; see docs/development.md, "Keeping test traffic on loopback").
 *
 * Events (`p2p.on(event, fn)`): "peer" (an accepted incoming Peer), "connection" (any new Peer),
 * "disconnection" (peer, reason), "discovered" (info), "error" (err).
 */
export class ClaspP2P extends Emitter {
  constructor({ signaling, rtcConfig, clientId, name, accept, presenceInterval = 5, batching = true,
    connectTimeout = 30000, closeTimeout = 2000, hostCandidateAddress = null, features = [] } = {}) {
    super();
    if (!signaling) throw new ClaspError("ClaspP2P needs a signaling (relay) URL");
    this.url = signaling;
    this.rtcConfig = rtcConfig ?? { iceServers: [] };
    this.clientId = clientId ?? `web-${uuid4().slice(0, 12)}`;
    if (this.clientId.includes("/")) throw new ClaspError(`clientId must be one address segment, got ${JSON.stringify(this.clientId)}`);
    this.name = name ?? `clasp-p2p.js ${this.clientId}`;
    this.accept = accept ?? null;
    this.presenceInterval = presenceInterval;
    this.batching = batching;
    this.connectTimeout = connectTimeout;
    this.closeTimeout = closeTimeout;
    this.hostCandidateAddress = hostCandidateAddress;
    this.features = [...new Set([...BASE_FEATURES, ...features])];
    this.localFeatures = batching ? LOCAL_FEATURES : LOCAL_FEATURES.filter((f) => f !== "batch");
    this.relay = null;
    this._known = new Map();
    this._peers = new Map();
    this._pending = new Map();
    this._answering = new Map();  // correlation id -> Peer for offers not answered yet
    this._knownIds = new Set();   // correlation ids offered by or to this object
    this._timer = null;
    this._closed = false;
  }

  get sessionId() { return this.relay?.sessionId ?? null; }

  /** Connect to the relay, subscribe to signals, presence and announces, publish presence. */
  async connect() {
    const relay = new RelayConnection(this.url, { name: this.name });
    await relay.connect();
    this.relay = relay;
    relay.on("signal", (s) => this._onSignal(s));
    relay.on("error", (err) => this._emit("error", err));
    relay.subscribe(SIGNAL_PREFIX + relay.sessionId, () => {});
    relay.subscribe(PRESENCE_PREFIX + "*", (value, address) => this._onPresence(value, address));
    relay.subscribe(ANNOUNCE_ADDRESS, (value) => this._onAnnounce(value));
    this._publishPresence();
    this._timer = setInterval(() => this._publishPresence(), this.presenceInterval * 1000);
    return this;
  }

  /** Known peers: `{sessionId, clientId, features, source}`. */
  peers() {
    const now = Date.now();
    return [...this._known.values()].filter((p) => p.expires == null || p.expires > now);
  }

  findPeer(id) {
    const direct = this._known.get(id);
    if (direct) return direct;
    const matches = this.peers().filter((p) => p.clientId === id);
    matches.sort((a, b) => b.lastSeen - a.lastSeen);
    return matches[0] ?? null;
  }

  /** Wait until a peer with client id or session id `id` is known. */
  async waitForPeer(id, { timeout = 5000 } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const info = this.findPeer(id);
      if (info) return info;
      if (Date.now() > deadline) throw new ClaspTransportError(`no peer with client id or session id ${id} found`, id, "discovery");
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The open connection to a peer, by client id or session id. */
  connection(id) {
    const p = this._peers.get(id) ?? [...this._peers.values()].find((x) => x.clientId === id);
    return p && p.connected ? p : null;
  }

  get connections() { return [...this._peers.values()].filter((p) => p.connected); }

  /** Connect to the peer with client id or session id `id` (or return the open connection). */
  async connectToPeer(id, { timeout } = {}) {
    if (!this.relay) throw new ClaspTransportError("not connected; call connect() first", id, "discovery");
    const open = this.connection(id);
    if (open) return open;
    let info = this.findPeer(id);
    if (!info) {
      if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) info = this._learn(id, null, null, "offer");
      else info = await this.waitForPeer(id, { timeout: timeout ?? 5000 });
    }
    const sid = info.sessionId;
    const waiting = this._pending.get(sid);
    if (waiting) return waiting.promise;
    const deferred = {};
    deferred.promise = new Promise((resolve, reject) => { deferred.resolve = resolve; deferred.reject = reject; });
    this._pending.set(sid, deferred);
    const peer = new Peer(this, sid, info);
    this._peers.set(sid, peer);
    const offering = peer._offer(timeout ?? this.connectTimeout);
    this._knownIds.add(peer.correlationId);
    offering.then((p) => {
      if (this._pending.get(sid) === deferred) this._pending.delete(sid);
      this._emit("connection", p);
      deferred.resolve(p);
      // After the awaiting caller's turn too (it may register handlers right after connectToPeer).
      setTimeout(() => p._start(), 0);
    }, (err) => {
      // After a glare hand-over the answering side settles the deferred instead.
      if (peer.handedOver) return;
      if (this._pending.get(sid) === deferred) this._pending.delete(sid);
      deferred.reject(err);
    });
    return deferred.promise;
  }

  /** Close every peer, withdraw presence and close the relay connection. */
  async close() {
    if (this._closed) return;
    this._closed = true;
    clearInterval(this._timer);
    await Promise.all([...this._peers.values(), ...this._answering.values()].map((p) => p.close()));
    try { if (this.relay?.connected) this.relay.set(PRESENCE_PREFIX + this.sessionId, null, { ttl: { mode: "absolute", secs: 1 } }); } catch { /* closing */ }
    this.relay?.close();
  }

  // -- discovery ------------------------------------------------------------------------

  _learn(sessionId, clientId, features, source, expires = null) {
    if (typeof sessionId !== "string" || !sessionId || sessionId === this.sessionId) return null;
    let info = this._known.get(sessionId);
    const isNew = !info;
    if (!info) { info = { sessionId, clientId: null, features: [], source }; this._known.set(sessionId, info); }
    if (typeof clientId === "string" && clientId) info.clientId = clientId;
    if (Array.isArray(features)) info.features = features.filter((f) => typeof f === "string");
    info.lastSeen = Date.now();
    if (source === "presence") { info.source = source; info.expires = expires; }
    if (isNew) {
      this._emit("discovered", info);
      if (source === "announce") this._announce();
    }
    return info;
  }

  _onPresence(value, address) {
    const sid = address.slice(PRESENCE_PREFIX.length);
    if (value === null) { this._known.delete(sid); return; }
    if (value && typeof value === "object" && !Array.isArray(value)) {
      this._learn(sid, value.client_id, value.features, "presence", Date.now() + 3000 * this.presenceInterval);
    }
  }

  _onAnnounce(value) {
    if (value && typeof value === "object") this._learn(value.session_id, value.client_id, value.features, "announce");
  }

  _announce() {
    if (!this.relay?.connected) return;
    this.relay.emit(ANNOUNCE_ADDRESS, { session_id: this.sessionId, p2p_capable: true, features: this.features, client_id: this.clientId });
  }

  _publishPresence() {
    if (!this.relay?.connected) return;
    const value = { client_id: this.clientId, session_id: this.sessionId, features: this.features };
    const secs = Math.max(1, Math.round(this.presenceInterval * 3));
    this.relay.set(PRESENCE_PREFIX + this.sessionId, value, { ttl: { mode: "absolute", secs } });
    this._announce();
  }

  // -- signaling ------------------------------------------------------------------------

  _rewriteCandidate(candidate) {
    const init = candidate.toJSON ? candidate.toJSON() : { ...candidate };
    if (!this.hostCandidateAddress) return init;
    const parts = init.candidate.split(" ");
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    if (parts.length < 8 || parts[2].toLowerCase() !== "udp" || parts[7] !== "host") return null;
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(parts[4])) return null;
    parts[4] = this.hostCandidateAddress;
    return { ...init, candidate: parts.join(" ") };
  }

  _acceptRemoteCandidate(line) {
    if (!this.hostCandidateAddress) return true;
    const parts = line.split(" ");
    return parts.length >= 6 && parts[4] === this.hostCandidateAddress;
  }

  async _onSignal(signal) {
    const from = signal.from;
    const kind = signal.type;
    const required = { offer: ["sdp"], answer: ["sdp"], ice_candidate: ["candidate"], connected: [], disconnected: [] }[kind];
    if (!required || typeof from !== "string" || typeof signal.correlation_id !== "string") return;
    if (required.some((k) => typeof signal[k] !== "string")) return;
    try {
      if (kind === "offer") { await this._onOffer(signal, this._peers.get(from)); return; }
      // Each signal goes to the connection it names, whatever its timing.
      const peer = this._peerFor(from, signal.correlation_id);
      if (peer) await peer._onSignal(signal);
      else if (kind !== "disconnected" && !this._knownIds.has(signal.correlation_id)) {
        this._emit("error", new ClaspError(`${kind} from ${from} for unknown correlation id ${signal.correlation_id} ignored`));
      }
    } catch (err) {
      this._emit("error", err);
    }
  }

  _peerFor(from, correlationId) {
    const current = this._peers.get(from);
    if (current && current.correlationId === correlationId) return current;
    const answering = this._answering.get(correlationId);
    return answering && answering.sessionId === from ? answering : null;
  }

  async _onOffer(offer, current) {
    const from = offer.from;
    const id = offer.correlation_id;
    if (this._knownIds.has(id)) return;  // a repeated offer
    this._knownIds.add(id);
    if ([...this._answering.values()].some((p) => p.sessionId === from)) return;  // one offer per peer at a time
    if (current && current.state === "connecting" && current.role === "offerer") {
      // Both sides offered at once: the smaller session id stays the offerer.
      if (this.sessionId < from) return;
      current.handedOver = true;
      await current._shutdown(null, "glare: the peer's offer wins");
    } else if (current && current.state === "connecting") {
      return;
    }
    const info = this._known.get(from) ?? this._learn(from, null, offer.features, "offer");
    const previous = current && current.state === "connected" ? current : null;
    // Reachable (by correlation id) before any await, so trickled candidates are queued, not lost.
    const peer = new Peer(this, from, info);
    peer.role = "answerer";
    peer.state = "connecting";
    peer.correlationId = id;
    this._answering.set(id, peer);
    let answer = false;
    try {
      answer = await this._mayAnswer(info, id, previous);
    } finally {
      this._answering.delete(id);
      if (answer) this._peers.set(from, peer);  // in the same step, so no signal finds neither
      else await peer._shutdown(null, "offer not answered", "failed");
    }
    if (!answer) return;
    const deferred = this._pending.get(from);
    try {
      await peer._answer(offer, this.connectTimeout);
    } catch (err) {
      this._emit("error", err);
      if (deferred) { this._pending.delete(from); deferred.reject(err); }
      return;
    }
    this._emit("peer", peer);
    this._emit("connection", peer);
    if (deferred) { this._pending.delete(from); deferred.resolve(peer); }
    setTimeout(() => peer._start(), 0);
  }

  // Not when a live connection to the offer's sender still answers (the relay may not check "from"),
  // nor when `accept` refuses (then the offerer is told).
  async _mayAnswer(info, id, previous) {
    const from = info.sessionId;
    if (previous) {
      if (await previous._probe(this.closeTimeout)) {
        this._emit("error", new ClaspError(`offer from ${from} ignored: the open connection to that session still answers, so the offer did not come from its peer`));
        return false;
      }
      // Not told with "disconnected": the peer would take it for its new connection.
      await previous._shutdown(null, "replaced by a new connection");
    }
    if (this.accept) {
      let ok = false;
      try { ok = await this.accept(info); } catch (err) { this._emit("error", err); }
      if (!ok) {
        this.relay.sendSignal(from, { type: "disconnected", correlation_id: id, reason: "refused" });
        return false;
      }
    }
    return true;
  }

  _peerClosed(peer) {
    if (this._peers.get(peer.sessionId) === peer) {
      this._peers.delete(peer.sessionId);
      this._emit("disconnection", peer, peer.closeReason);
    }
  }
}
