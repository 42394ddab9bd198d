// Test peer page for tests/test_browser.py. Query: relay, client (own client id), role ("offer" or
// "answer"), peer (client id to connect to when offering), me / other (address prefixes),
// channel (optional prefix of an extra unreliable DataChannel the offerer opens).
// The exchange: each side sends /{me}/go when ready, and on the first /{other}/go it sends go again
// plus a SET, an event, five stream messages and (with channel) a SET on the extra channel; then it
// GETs the other's SET. window.__result holds what arrived, the channel counters, or the error.
import { ClaspP2P } from "/clasp-p2p.js";

const q = new URLSearchParams(location.search);
const me = q.get("me") ?? "web";
const other = q.get("other") ?? "py";
const errors = [];
const line = (s) => { document.getElementById("log").textContent += s + "\n"; };

async function main() {
  const p2p = new ClaspP2P({ signaling: q.get("relay"), clientId: q.get("client"), hostCandidateAddress: "127.0.0.1", presenceInterval: 1 });
  p2p.on("error", (err) => errors.push(String(err && err.message || err)));
  await p2p.connect();
  line(`session ${p2p.sessionId}`);
  const incoming = new Promise((resolve) => p2p.on("peer", resolve));
  const peer = q.get("role") === "offer" ? await p2p.connectToPeer(q.get("peer"), { timeout: 30000 }) : await incoming;
  line(`connected to ${peer.sessionId} as ${peer.role}`);
  const got = { set: null, event: null, streams: [], channel: null, go: 0 };
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  const check = () => { if (got.set !== null && got.event !== null && got.streams.length > 0 && got.get !== undefined) resolveDone(); };

  const channel = q.get("channel");
  let sent = false;
  let sending = Promise.resolve();
  const sendAll = async () => {
    peer.emit(`/${me}/go`, true);
    if (sent) return;
    sent = true;
    // A SET that cannot be encoded throws and leaves this side's params as they were.
    try { peer.set(`/${me}/unsendable`, () => 0); got.unsendable = "sent"; } catch (e) { got.unsendable = e.name; }
    got.unsendableStored = peer.params.has(`/${me}/unsendable`);
    peer.set(`/${me}/set`, 1.5);
    peer.emit(`/${me}/event`, { n: 7, s: "héllo", big: 2n ** 60n, bytes: new Uint8Array([0, 255]) });
    for (let i = 0; i < 5; i++) {
      // Unreliable: the first message on a new unordered channel may overtake its DCEP OPEN and be dropped.
      if (channel) peer.set(`${channel}/x`, 42);
      peer.stream(`/${me}/stream`, new Float64Array([0.25, 0.5, i]));
      await new Promise((r) => setTimeout(r, 40));
    }
  };
  peer.on(`/${other}/**`, (value, address, msg) => {
    if (address === `/${other}/go`) {
      got.go++;
      if (got.go === 1) sending = sendAll().catch((e) => errors.push(String(e)));
    } else if (address === `/${other}/set`) {
      got.set = value;
      peer.get(`/${other}/set`).then((v) => { got.get = v; check(); }, (e) => { got.get = String(e); check(); });
    } else if (address === `/${other}/event`) {
      got.event = { ...value, big: typeof value.big === "bigint" ? value.big.toString() : value.big, bytes: value.bytes ? [...value.bytes] : null };
    } else if (address === `/${other}/stream`) {
      got.streams.push({ samples: [...value], signal: msg.signal });
    }
    check();
  });
  if (channel) await peer.createDataChannel(channel, { ordered: false, maxRetransmits: 0 });
  peer.emit(`/${me}/go`, true);
  await done;
  await sending;  // all five stream messages of this side went out (whatever the timers' pace)
  await new Promise((r) => setTimeout(r, 300));  // let the last frames of this side leave
  window.__result = { ok: true, session: p2p.sessionId, remote: peer.sessionId, role: peer.role, got, stats: peer.stats(), errors };
  line("done");
}

main().catch((err) => { window.__result = { ok: false, error: String(err && err.stack || err), errors }; line(String(err)); });
