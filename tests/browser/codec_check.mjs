// Decodes frames with clasp-p2p.js's codec and re-encodes them, for tests/test_browser_codec.py.
// stdin: JSON list of frame hex strings. stdout: JSON list of
// {neutral, reencoded} or {error, offset, field} — values in the neutral form of docs/protocol.md §14,
// where every JS number is written as a float (its f64 bits) and a BigInt as an int.
// The module under test is given by CLASP_P2P_JS (a path), so the installed package's copy is tested
// when the suite runs against a wheel; by default, the source tree's.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const modulePath = process.env.CLASP_P2P_JS
  ?? new URL("../../clasp_fast/browser/clasp-p2p.js", import.meta.url).pathname;
const { decodeFrame, encodeFrame, ClaspDecodeError } = await import(pathToFileURL(modulePath).href);

const bitsView = new DataView(new ArrayBuffer(8));
function floatBits(x) {
  bitsView.setFloat64(0, x);
  return [...new Uint8Array(bitsView.buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
function hex(bytes) { return Buffer.from(bytes).toString("hex"); }
function int(v) { return typeof v === "bigint" ? { $int: v.toString() } : v; }

function value(v) {
  if (v === null) return { t: "null" };
  if (typeof v === "boolean") return { t: "bool", v };
  if (typeof v === "number") return { t: "float", bits: floatBits(v) };
  if (typeof v === "bigint") return { t: "int", v: { $int: v.toString() } };
  if (typeof v === "string") return { t: "str", v };
  if (v instanceof Uint8Array) return { t: "bytes", hex: hex(v) };
  if (Array.isArray(v)) return { t: "array", v: v.map(value) };
  return { t: "map", v: Object.fromEntries(Object.entries(v).map(([k, x]) => [k, value(x)])) };
}

function signal(s) {
  const out = { ...s };
  if (s.meta) {
    out.meta = { ...s.meta };
    if (s.meta.range) out.meta.range = s.meta.range.map(floatBits);
    if ("default" in s.meta) out.meta.default = value(s.meta.default);
  }
  return out;
}

function neutral(m) {
  const out = {};
  for (const [k, v] of Object.entries(m)) {
    if (k === "value") out[k] = value(v);
    else if (k === "samples") out[k] = [...v].map(floatBits);
    else if (k === "params") out[k] = v.map((p) => { const q = { ...p, value: value(p.value), revision: int(p.revision) }; if ("timestamp" in p) q.timestamp = int(p.timestamp); return q; });
    else if (k === "messages") out[k] = v.map(neutral);
    else if (k === "signals") out[k] = v.map(signal);
    else if (k === "options") out[k] = { ...v, ...(v.epsilon !== undefined ? { epsilon: floatBits(v.epsilon) } : {}) };
    else if (k === "revisions") out[k] = Object.fromEntries(Object.entries(v).map(([a, r]) => [a, int(r)]));
    else out[k] = int(v);
  }
  return out;
}

const frames = JSON.parse(readFileSync(0, "utf8"));
const results = frames.map((h) => {
  let message;
  try {
    message = decodeFrame(Buffer.from(h, "hex")).message;
  } catch (err) {
    if (!(err instanceof ClaspDecodeError)) return { crash: String(err && err.stack) };
    return { error: err.message, offset: err.offset, field: err.field };
  }
  const out = { neutral: neutral(message) };
  try { out.reencoded = hex(encodeFrame(message)); } catch (err) { out.encode_error = err.message; }
  return out;
});
process.stdout.write(JSON.stringify(results));
