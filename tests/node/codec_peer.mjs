// A long-lived codec peer around the official JS client (@clasp-to/core).
//
// Protocol: one JSON object per line on stdin, one JSON reply per line on stdout, in order.
//   {"op": "encode", "message": {...}, "options": {"qos": 2, "timestamp": {"$bigint": "5"}}}
//       -> {"ok": true, "frame_hex": "53..."}
//   {"op": "decode", "frame_hex": "53..."}
//       -> {"ok": true, "flags": {...}, "message": {...}, "timestamp"?: "<decimal>"}
//   {"op": "version"} -> {"ok": true, "package": "@clasp-to/core", "version": "3.3.2"}
//   any failure -> {"ok": false, "error": "<Error name>: <message>"}
// A request may carry "id"; the reply echoes it.
//
// Messages use the JS client's own shape (camelCase where the JS API uses it, e.g.
// correlationId, options.maxRate) with the markers of vectors/official_js.json for what JSON
// cannot carry: {"$bytes": hex} for Uint8Array, {"$bigint": decimal} for BigInt and
// {"$float": "NaN" | "Infinity" | "-Infinity" | "-0"} for the special numbers.
// The frame timestamp of a decoded frame is a decimal string, as in official_js.json.

import { createInterface } from "node:readline";
import { readFileSync } from "node:fs";
import WebSocket from "ws";

// Node 20 has no global WebSocket; the client module expects one.
globalThis.WebSocket ??= WebSocket;
const clasp = await import("@clasp-to/core");

// The package's "exports" hides package.json, so read it from node_modules beside this file.
const clientPackage = JSON.parse(
  readFileSync(new URL("./node_modules/@clasp-to/core/package.json", import.meta.url), "utf8"),
);

function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) {
    throw new TypeError(`not a hex string: ${JSON.stringify(hex)}`);
  }
  return Uint8Array.from(Buffer.from(hex, "hex"));
}

function bytesToHex(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

const SPECIAL_FLOATS = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity, "-0": -0 };

// JSON (with markers) -> JS values.
function fromJson(value) {
  if (Array.isArray(value)) return value.map(fromJson);
  if (value === null || typeof value !== "object") return value;
  const keys = Object.keys(value);
  if (keys.length === 1) {
    if (keys[0] === "$bytes") return hexToBytes(value.$bytes);
    if (keys[0] === "$bigint") return BigInt(value.$bigint);
    if (keys[0] === "$float") {
      if (!(value.$float in SPECIAL_FLOATS)) throw new TypeError(`unknown $float ${value.$float}`);
      return SPECIAL_FLOATS[value.$float];
    }
  }
  const out = {};
  for (const key of keys) out[key] = fromJson(value[key]);
  return out;
}

// JS values -> JSON (with markers); undefined members are left out.
function toJson(value) {
  if (value instanceof Uint8Array) return { $bytes: bytesToHex(value) };
  if (typeof value === "bigint") return { $bigint: value.toString() };
  if (typeof value === "number") {
    if (Number.isNaN(value)) return { $float: "NaN" };
    if (value === Infinity) return { $float: "Infinity" };
    if (value === -Infinity) return { $float: "-Infinity" };
    if (Object.is(value, -0)) return { $float: "-0" };
    return value;
  }
  if (Array.isArray(value)) return value.map(toJson);
  if (value === null || typeof value !== "object") return value;
  const out = {};
  for (const [key, member] of Object.entries(value)) {
    if (member !== undefined) out[key] = toJson(member);
  }
  return out;
}

function encode(request) {
  const message = fromJson(request.message);
  const options = request.options ? fromJson(request.options) : {};
  return { frame_hex: bytesToHex(clasp.encodeMessage(message, options)) };
}

function decode(request) {
  const { message, flags, timestamp } = clasp.decodeMessage(hexToBytes(request.frame_hex));
  const reply = { flags: toJson(flags), message: toJson(message) };
  if (timestamp !== undefined) reply.timestamp = timestamp.toString();
  return reply;
}

const OPERATIONS = {
  encode,
  decode,
  version: () => ({ package: clientPackage.name, version: clientPackage.version }),
};

function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (error) {
    return { ok: false, error: `bad request line: ${error.message}` };
  }
  const reply = {};
  if (request.id !== undefined) reply.id = request.id;
  const operation = OPERATIONS[request.op];
  if (operation === undefined) {
    return { ...reply, ok: false, error: `unknown op ${JSON.stringify(request.op)}` };
  }
  try {
    return { ...reply, ok: true, ...operation(request) };
  } catch (error) {
    return { ...reply, ok: false, error: `${error.name}: ${error.message}` };
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === "") continue;
  process.stdout.write(JSON.stringify(handle(line)) + "\n");
}
