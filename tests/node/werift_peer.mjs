// A P2P peer on werift (a WebRTC stack in TypeScript, nothing shared with aiortc) that signals through
// a CLASP relay as the reference client does (offer/answer/ice_candidate/connected/disconnected maps on
// /clasp/p2p/signal/{session}), using clasp_fast's browser module only for the relay connection and
// the CLASP codec. ICE: host candidates on 127.0.0.1 only, no STUN server.
//
//   node werift_peer.mjs URL offer <target session> COUNT   or   node werift_peer.mjs URL answer - COUNT
//
// Once both channels are open it sends COUNT SETs (/werift/rel = i) on clasp-reliable and COUNT stream
// PUBLISHes (/werift/stream = i) on clasp, then its `disconnected` signal at once, and waits for the
// other side's `disconnected`. Then it waits (at most 5 s) until SCTP has nothing of its own left
// unacknowledged and closes. Events go to stdout as JSON lines:
//   {"event":"ready","session":...}  {"event":"connected","remoteCandidates":[...]}
//   {"event":"done","reliable":[values in order],"unreliable":n,"reason":...,"closedBy":...}

import { pathToFileURL } from "node:url";
import WebSocket from "ws";
import { RTCPeerConnection } from "werift";

globalThis.WebSocket ??= WebSocket;
// The module of the clasp_fast under test (the installed one in the wheel stage), as codec_check.mjs does.
const modulePath = process.env.CLASP_P2P_JS
  ?? new URL("../../clasp_fast/browser/clasp-p2p.js", import.meta.url).pathname;
const { RelayConnection, encodeFrame, decodeFrames } = await import(pathToFileURL(modulePath).href);

const [url, role, targetArg, countArg] = process.argv.slice(2);
const COUNT = Number(countArg ?? 500);
const out = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const fail = (error) => { out({ event: "error", error: String(error?.stack ?? error) }); process.exit(1); };
process.on("unhandledRejection", fail);
setTimeout(() => fail("werift peer: no result within 60 s"), 60000).unref();

const relay = new RelayConnection(url, { name: "werift-peer" });
await relay.connect();
relay.subscribe(`/clasp/p2p/signal/${relay.sessionId}`, () => {});
out({ event: "ready", session: relay.sessionId });

const pc = new RTCPeerConnection({
  iceServers: [],                          // werift's default is a public STUN server
  iceUseIpv4: false,                       // no host candidates from the machine's interfaces...
  iceUseIpv6: false,
  iceAdditionalHostAddresses: ["127.0.0.1"], // ...only loopback
  iceInterfaceAddresses: { udp4: "127.0.0.1" },
});
const channels = {};
const reliable = [];
let unreliable = 0;
let target = role === "offer" ? targetArg : null;
let correlationId = null;
const remoteCandidates = [];
let remoteReason = null;
let remoteDisconnected;
const remoteDisconnectedSeen = new Promise((resolve) => { remoteDisconnected = resolve; });
let opened;
const bothOpen = new Promise((resolve) => { opened = resolve; });

const signal = (fields) => relay.sendSignal(target, { ...fields, correlation_id: correlationId });

function addChannel(dc) {
  channels[dc.label] = dc;
  dc.onMessage.subscribe((data) => {
    for (const msg of decodeFrames(new Uint8Array(data))) {
      if (msg.type === "SET" && msg.address === "/fast/rel") reliable.push(msg.value);
      else if (msg.type === "PUBLISH" && msg.address === "/fast/stream") unreliable++;
    }
  });
  dc.stateChanged.subscribe(checkOpen);
  checkOpen();
}
function checkOpen() {
  if (channels.clasp?.readyState === "open" && channels["clasp-reliable"]?.readyState === "open") opened();
}

pc.onIceCandidate.subscribe((candidate) => {
  if (!candidate || !target) return;
  const init = candidate.toJSON();
  signal({ type: "ice_candidate", candidate: JSON.stringify({
    candidate: init.candidate, sdpMid: init.sdpMid ?? "0", sdpMLineIndex: init.sdpMLineIndex ?? 0, usernameFragment: null }) });
});
pc.onDataChannel.subscribe(addChannel);

const pending = [];
let remoteSet = false;
async function addCandidate(text) {
  const init = JSON.parse(text);
  remoteCandidates.push(init.candidate);
  await pc.addIceCandidate({ candidate: init.candidate, sdpMid: init.sdpMid ?? "0", sdpMLineIndex: init.sdpMLineIndex ?? 0 });
}

let chain = Promise.resolve();
relay.on("signal", (s) => { chain = chain.then(() => onSignal(s)).catch(fail); });
async function onSignal(s) {
  if (role === "answer" && s.type === "offer" && !correlationId) {
    target = s.from;
    correlationId = s.correlation_id;
    await pc.setRemoteDescription({ type: "offer", sdp: s.sdp });
    remoteSet = true;
    for (const c of pending.splice(0)) await addCandidate(c);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    signal({ type: "answer", sdp: answer.sdp });
    return;
  }
  if (s.correlation_id !== correlationId && s.type !== "disconnected") return;
  if (s.type === "answer" && role === "offer") {
    await pc.setRemoteDescription({ type: "answer", sdp: s.sdp });
    remoteSet = true;
    for (const c of pending.splice(0)) await addCandidate(c);
  } else if (s.type === "ice_candidate") {
    if (remoteSet) await addCandidate(s.candidate); else pending.push(s.candidate);
  } else if (s.type === "disconnected") {
    remoteReason = s.reason ?? null;
    remoteDisconnected();
  }
}

if (role === "offer") {
  correlationId = `${relay.sessionId}-${target}-${crypto.randomUUID()}`;
  addChannel(pc.createDataChannel("clasp", { ordered: false, maxRetransmits: 0 }));
  addChannel(pc.createDataChannel("clasp-reliable"));
  const offer = await pc.createOffer();
  signal({ type: "offer", sdp: offer.sdp });  // taken before gathering, as the reference client does
  await pc.setLocalDescription(offer);
}

await bothOpen;
signal({ type: "connected" });
out({ event: "connected", remoteCandidates });
for (let i = 0; i < COUNT; i++) {
  channels["clasp-reliable"].send(Buffer.from(encodeFrame({ type: "SET", address: "/werift/rel", value: i })));
  channels.clasp.send(Buffer.from(encodeFrame({ type: "PUBLISH", address: "/werift/stream", signal: "stream", value: i })));
  if (i % 10 === 9) await new Promise((r) => setImmediate(r));  // let werift read its socket meanwhile
}
signal({ type: "disconnected", reason: "werift done" });  // no delay: the data is still in flight

await Promise.race([remoteDisconnectedSeen, new Promise((r) => setTimeout(r, 20000))]);
// Close only once the peer has acknowledged everything sent (werift aborts the association on close).
const sctp = pc.sctpTransport?.sctp;
for (let i = 0; i < 500 && sctp && (sctp.outboundQueue.length || sctp.sentQueue.length); i++) {
  await new Promise((r) => setTimeout(r, 10));
}
out({ event: "done", reliable, unreliable, reason: remoteReason, channelState: channels["clasp-reliable"].readyState });
await pc.close();
relay.close();
process.exit(0);
