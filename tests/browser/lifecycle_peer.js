// Teardown test peer for tests/test_browser.py. Query: relay, client (own client id), role ("offer" or
// "answer"), peer (client id to connect to when offering), count.
// As soon as the connection is up it sends `count` SETs (/web/rel = i, reliable) and `count` stream
// PUBLISHes (/web/stream = i, unreliable), then its `disconnected` signal at once (the data is still in
// flight), then close(): it waits until the peer has closed its side. window.__result holds what
// arrived from the Python peer (/py/rel in order, /py/stream count) and the close reason.
import { ClaspP2P } from "/clasp-p2p.js";

const q = new URLSearchParams(location.search);
const count = Number(q.get("count") ?? 500);
const errors = [];

async function main() {
  const p2p = new ClaspP2P({ signaling: q.get("relay"), clientId: q.get("client"), hostCandidateAddress: "127.0.0.1", presenceInterval: 1, closeTimeout: 15000 });
  p2p.on("error", (err) => errors.push(String(err && err.message || err)));
  const reliable = [];
  let streamed = 0;
  let closeReason = null;
  const events = [];  // what happened to the channels and the peer connection, for a failure's message
  const sendEverything = (peer) => {
    const t0 = performance.now();
    const at = () => Math.round(performance.now() - t0);
    for (const [label, ch] of peer._channels) {
      ch.dc.addEventListener("error", (ev) => events.push(`${at()} ms ${label} error ${ev.error?.message ?? ev}`));
      ch.dc.addEventListener("close", () => events.push(`${at()} ms ${label} close`));
    }
    peer.pc.addEventListener("connectionstatechange", () => events.push(`${at()} ms pc ${peer.pc.connectionState}`));
    peer.on("/py/rel", (value) => reliable.push(value));
    peer.on("/py/stream", () => { streamed++; });
    peer.on("close", (reason) => { closeReason = reason; });
    for (let i = 0; i < count; i++) {
      peer.set("/web/rel", i);
      peer.stream("/web/stream", i);
    }
    peer.flush();
    p2p.relay.sendSignal(peer.sessionId, { type: "disconnected", correlation_id: peer.correlationId, reason: "web done" });
  };
  p2p.on("connection", sendEverything);
  await p2p.connect();
  const incoming = new Promise((resolve) => p2p.on("peer", resolve));
  const peer = q.get("role") === "offer" ? await p2p.connectToPeer(q.get("peer"), { timeout: 30000 }) : await incoming;
  const started = performance.now();
  await peer.close("web done");
  window.__result = { ok: true, role: peer.role, reliable, streamed, closeReason, closeMs: performance.now() - started, errors, events, channels: peer.stats().channels };
}

main().catch((err) => { window.__result = { ok: false, error: String(err && err.stack || err), errors }; });
