// The example page: connect to the Python peer "py-sensor" through the relay that served this page,
// draw its live wave, show its params, and send control values back.
import { ClaspP2P } from "/clasp-p2p.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const relayUrl = params.get("relay") ?? `ws://${location.host}/`;
const loopback = ["127.0.0.1", "localhost", "[::1]"].includes(location.hostname);
const state = { frames: 0, temperature: null, gainAck: null, presses: 0, last: null };
window.__example = state;

function draw(samples) {
  const c = $("wave"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = "#2a3550"; g.beginPath(); g.moveTo(0, c.height / 2); g.lineTo(c.width, c.height / 2); g.stroke();
  g.strokeStyle = "#46d2ff"; g.lineWidth = 3; g.beginPath();
  samples.forEach((y, i) => {
    const px = (i / (samples.length - 1)) * c.width, py = c.height / 2 - y * (c.height / 2 - 10);
    i ? g.lineTo(px, py) : g.moveTo(px, py);
  });
  g.stroke();
}

async function main() {
  // On one machine the browser's host candidates are rewritten to 127.0.0.1 (see the README).
  const p2p = new ClaspP2P({ signaling: relayUrl, clientId: "viewer", hostCandidateAddress: loopback ? "127.0.0.1" : null });
  p2p.on("error", (err) => console.warn("clasp:", err.message));
  await p2p.connect();
  $("status").textContent = "looking for py-sensor…";
  const peer = await p2p.connectToPeer(params.get("peer") ?? "py-sensor", { timeout: 30000 });
  $("status").textContent = `connected to ${peer.clientId ?? peer.sessionId}`;
  $("status").className = "connected";
  peer.on("close", (reason) => { $("status").textContent = `disconnected (${reason})`; $("status").className = "failed"; });

  peer.on("/sensor/wave", (samples) => {
    state.frames++;
    state.last = samples[samples.length - 1];
    $("frames").textContent = state.frames;
    $("sample").textContent = state.last.toFixed(3);
    draw(samples);
  });
  peer.on("/sensor/temperature", (value) => { state.temperature = value; $("temperature").textContent = `${value.toFixed(2)} °C`; });
  peer.on("/sensor/gain", (value) => { state.gainAck = value; $("gain-ack").textContent = value.toFixed(2); });
  peer.on("/sensor/presses", (value) => { state.presses = value; $("presses").textContent = value; });

  const sendGain = (value) => { $("gain-sent").textContent = value.toFixed(2); peer.set("/control/gain", value); };
  $("gain").addEventListener("input", (ev) => sendGain(Number(ev.target.value)));
  $("button").addEventListener("click", () => peer.emit("/control/button", { at: Date.now() }));
  if (params.has("gain")) { $("gain").value = params.get("gain"); sendGain(Number(params.get("gain"))); }
  if (params.has("press")) $("button").click();
}

main().catch((err) => { $("status").textContent = `failed: ${err.message}`; $("status").className = "failed"; console.error(err); });
