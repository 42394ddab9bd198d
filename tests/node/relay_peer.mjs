// A scripted relay peer around the official JS client (@clasp-to/core), driven over stdio.
//
// One JSON command per line on stdin; events come back as JSON lines on stdout:
//   {"op": "connect", "url": "ws://127.0.0.1:PORT", "name": "js"}  -> {"event": "connected", "session": "..."}
//   {"op": "subscribe", "pattern": "/a/**"}    -> {"event": "subscribed", "pattern": ...}, then for each
//                                                  delivery {"event": "value", "pattern", "address", "value"}
//   {"op": "set", "address", "value"}          -> {"event": "sent", "op": "set"}
//   {"op": "emit", "address", "value"}         -> {"event": "sent", "op": "emit"}
//   {"op": "get", "address"}                   -> {"event": "got", "address", "value"} or {"event": "get_failed", ...}
//   {"op": "close"}                            -> {"event": "closed"} and exit
// Errors reported by the client -> {"event": "error", "error": "..."}.

import { createInterface } from "node:readline";
import WebSocket from "ws";

// Node 20 has no global WebSocket; the client module expects one.
globalThis.WebSocket ??= WebSocket;
// The client logs to the console; keep stdout for the JSON events.
console.log = console.info = console.debug = (...args) => console.error(...args);
const { Clasp } = await import("@clasp-to/core");

let client = null;

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

async function handle(command) {
  switch (command.op) {
    case "connect": {
      client = new Clasp(command.url, { name: command.name ?? "js-peer", reconnect: false });
      client.onError((error) => emit({ event: "error", error: String(error) }));
      await client.connect();
      emit({ event: "connected", session: client.session });
      break;
    }
    case "subscribe":
      client.subscribe(command.pattern, (value, address) =>
        emit({ event: "value", pattern: command.pattern, address, value }),
      );
      emit({ event: "subscribed", pattern: command.pattern });
      break;
    case "set":
      client.set(command.address, command.value);
      emit({ event: "sent", op: "set", address: command.address });
      break;
    case "emit":
      client.emit(command.address, command.value);
      emit({ event: "sent", op: "emit", address: command.address });
      break;
    case "get":
      try {
        const value = await client.get(command.address);
        emit({ event: "got", address: command.address, value });
      } catch (error) {
        emit({ event: "get_failed", address: command.address, error: String(error) });
      }
      break;
    case "close":
      client?.close();
      emit({ event: "closed" });
      process.exit(0);
      break;
    default:
      emit({ event: "error", error: `unknown op ${command.op}` });
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  try {
    await handle(JSON.parse(line));
  } catch (error) {
    emit({ event: "error", error: String(error) });
  }
}
process.exit(0);
