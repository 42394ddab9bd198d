"""``python -m clasp_fast`` / ``clasp-fast``: the command line.

Each subcommand is a function ``add_<name>(subparsers)`` that registers its parser and
sets ``func``; ``main`` dispatches.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Sequence

from ..wire.protocol import DEFAULT_PORT
from . import arguments as types


def build_parser() -> argparse.ArgumentParser:
    parser = types.Parser(prog="clasp-fast", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


SUBCOMMANDS: list = []


def add_relay(subparsers) -> None:
    """``relay``: run the embedded CLASP relay until interrupted."""
    p = subparsers.add_parser("relay", help="run the embedded CLASP relay (WebSocket, subprotocol clasp)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=types.port_or_zero, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    p.add_argument("--name", default="clasp_fast relay", help="router name sent in WELCOME")
    p.add_argument("--max-sessions", type=types.non_negative_int, default=100)
    p.add_argument("--max-subscriptions", type=types.non_negative_int, default=1000, help="per session")
    p.add_argument("--rate-limit", type=types.non_negative_int, default=None, metavar="MSG_PER_S",
                   help="per-session message rate limit (default off; the reference uses 1000)")
    p.add_argument("--queue-size", type=types.non_negative_int, default=1024,
                   help="outgoing frames queued per session")
    p.add_argument("--no-gesture-coalescing", action="store_true")
    p.add_argument("--token", action="append", default=[], metavar="TOKEN=SCOPE[,SCOPE...]",
                   help="accept TOKEN with these scopes (repeatable); turns on authenticated mode. "
                        "A scope is read:PATTERN, write:PATTERN or claim:IDS, e.g. "
                        "--token cpsk_desk=read:/lights/**,write:/lights/**,claim:desk-* ; a PATTERN with * "
                        "is a glob, otherwise one exact address (write:/lights/** does not cover /lights); "
                        "claim:IDS names the P2P client ids the token may use (docs/security.md)")
    p.add_argument("--tokens-file", metavar="PATH",
                   help='JSON file {"TOKEN": ["read:PATTERN", "write:PATTERN", "claim:IDS", ...], ...}; '
                        "turns on authenticated mode (combined with --token)")
    p.add_argument("--max-store-bytes", type=int, default=64 * 1024 * 1024, metavar="BYTES",
                   help="bound on stored params and announced signals (default 64 MiB); "
                        "SETs beyond it get ERROR 507")
    types.add_metrics_options(p)

    def run(args) -> int:
        import asyncio
        import logging

        from ..metrics import MetricsError
        from ..relay import Relay

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        try:
            auth = relay_auth(args.token, args.tokens_file)
        except ValueError as exc:
            return _fail(str(exc), "relay")

        async def serve() -> None:
            relay = await Relay.start(
                args.host, args.port, name=args.name, max_sessions=args.max_sessions,
                max_subscriptions=args.max_subscriptions, rate_limit=args.rate_limit,
                queue_size=args.queue_size, max_store_bytes=args.max_store_bytes,
                gesture_coalesce=None if args.no_gesture_coalescing else 0.016, auth=auth,
                metrics_port=args.metrics_port, metrics_host=args.metrics_host)
            print(f"clasp_fast relay listening on {relay.url}", flush=True)
            if relay.metrics_server is not None:
                print(f"metrics on {relay.metrics_server.url}", flush=True)
            if auth is not None:
                print(f"authenticated mode: {len(auth.tokens)} tokens", flush=True)
            try:
                await relay.serve_forever()
            finally:
                await relay.close()

        try:
            asyncio.run(serve())
        except MetricsError as exc:
            return _fail(str(exc), "relay")
        except OSError as exc:
            return _fail(types.listen_error(exc, args.host, args.port), "relay")
        return 0

    p.set_defaults(func=run)


SUBCOMMANDS.append(add_relay)


# A scope list is split on the commas that start another scope, so that a
# pattern's own commas ("read:/x/{a,b}") survive.
_SCOPE_SEPARATOR = re.compile(r",(?=\s*(?:read|write|claim):)")


def relay_auth(token_options: Sequence[str], tokens_file: str | None):
    """The ``TokenAuth`` of ``--token`` / ``--tokens-file``, or None (open mode); ValueError if bad."""
    from ..relay.auth import TokenAuth

    if not token_options and tokens_file is None:
        return None
    tokens: dict[str, list[str]] = {}
    if tokens_file is not None:
        try:
            with open(tokens_file, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"--tokens-file {tokens_file}: {exc}") from None
        if not isinstance(loaded, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in loaded.values()):
            raise ValueError(f'--tokens-file {tokens_file}: expected {{"TOKEN": ["read:PATTERN", ...]}}')
        tokens.update(loaded)
    for option in token_options:
        token, sep, scopes = option.partition("=")
        if not sep or not token:
            raise ValueError(f"--token {option!r}: expected TOKEN=SCOPE[,SCOPE...]")
        listed = [s.strip() for s in _SCOPE_SEPARATOR.split(scopes) if s.strip()]
        tokens[token] = tokens.get(token, []) + listed
    return TokenAuth(tokens)


def _fail(message: str, command: str | None = None) -> int:
    """Print one error line on stderr; return the exit status 1."""
    prog = f"clasp-fast {command}" if command else "clasp-fast"
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


def add_encode(subparsers) -> None:
    """``encode``: a message as JSON (stdin) -> the frame as hex (stdout)."""
    p = subparsers.add_parser(
        "encode", help="encode a message given as JSON on stdin; prints the frame as hex",
        description="Read one message as JSON from stdin and print the CLASP frame as hex. Values are "
                    'plain JSON (echo \'{"type": "SET", "address": "/a", "value": 0.5}\' | clasp-fast '
                    "encode); 5 is an integer, 5.0 a float, {\"$bytes\": \"00ff\"} bytes. Tagged values "
                    'of the conformance vectors\' neutral form ({"t": "int", "v": 5}) are accepted too; '
                    "--neutral accepts only that form.")
    p.add_argument("--neutral", action="store_true",
                   help="read the strict neutral form (every value tagged, floats as IEEE-754 bits)")
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=None,
                   help="frame QoS (default: the reference default for the message type)")
    p.add_argument("--timestamp", type=types.non_negative_int, default=None, metavar="MICROSECONDS",
                   help="set the optional frame timestamp field")

    def run(args) -> int:
        from ..wire.codec import encode
        from ..errors import EncodeError
        from ..wire.neutral import NeutralError, from_neutral

        text = sys.stdin.read()
        try:
            message = from_neutral(json.loads(text), plain=not args.neutral)
            frame = encode(message, qos=args.qos, timestamp=args.timestamp)
        except json.JSONDecodeError as e:
            return _fail(f"stdin is not JSON: {e}", "encode")
        except (NeutralError, EncodeError, ValueError, TypeError) as e:
            return _fail(str(e), "encode")
        print(frame.hex())
        return 0

    p.set_defaults(func=run)


def add_decode(subparsers) -> None:
    """``decode``: a frame (hex argument, hex on stdin, or raw bytes) -> JSON."""
    p = subparsers.add_parser(
        "decode", help="decode a frame given as hex (argument or stdin) or raw bytes; prints JSON",
        description="Decode a CLASP frame and print the message as JSON with plain values "
                    '({"type": "SET", "address": "/a", "value": 0.5, ...}); --neutral prints the '
                    "conformance vectors' tagged form instead.")
    p.add_argument("hex", nargs="?", help="the frame as hex (default: read hex from stdin)")
    p.add_argument("--raw", action="store_true", help="read raw frame bytes from stdin")
    p.add_argument("--file", metavar="PATH", help="read raw frame bytes from a file")
    p.add_argument("--all", action="store_true",
                   help="decode every frame of a buffer of back-to-back frames (a JSON list)")
    p.add_argument("--header", action="store_true",
                   help="wrap the message with the frame header fields (qos, timestamp, ...)")
    p.add_argument("--neutral", action="store_true",
                   help="print the neutral form (tagged values, floats as IEEE-754 bits)")

    def run(args) -> int:
        from ..wire.codec import decode_frame, iter_frames
        from ..errors import DecodeError
        from ..wire.neutral import to_neutral

        if args.file is not None:
            try:
                with open(args.file, "rb") as handle:
                    data = handle.read()
            except OSError as e:
                return _fail(f"cannot read {args.file}: {e.strerror}", "decode")
        elif args.raw:
            data = sys.stdin.buffer.read()
        else:
            text = args.hex if args.hex is not None else sys.stdin.read()
            text = "".join(text.split())
            try:
                data = bytes.fromhex(text)
            except ValueError as e:
                return _fail(f"input is not hex: {e}", "decode")

        def render(frame):
            message = to_neutral(frame.message, plain=not args.neutral)
            if not args.header:
                return message
            return {"qos": frame.qos, "timestamp": frame.timestamp, "version": frame.version,
                    "encrypted": frame.encrypted, "compressed": frame.compressed,
                    "size": frame.size, "message": message}

        try:
            if args.all:
                result = [render(frame) for frame in iter_frames(data)]
            else:
                result = render(decode_frame(data))
        except DecodeError as e:
            return _fail(f"cannot decode: {e}", "decode")
        print(json.dumps(result, ensure_ascii=False))
        return 0

    p.set_defaults(func=run)


SUBCOMMANDS.extend([add_encode, add_decode])


def add_bench(subparsers) -> None:
    """``bench``: P2P against the relay path (implemented in :mod:`clasp_fast.bench.command`)."""
    from .bench import add_bench as add

    add(subparsers)


SUBCOMMANDS.append(add_bench)


def add_peer(subparsers) -> None:
    """``peer``: a P2P peer that streams or watches (implementation in ``peer_cli``)."""
    from .peer import add_peer as add

    add(subparsers)


SUBCOMMANDS.append(add_peer)

from .demo import add_demo  # noqa: E402

SUBCOMMANDS.append(add_demo)


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import ClaspError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except ClaspError as exc:  # a condition to report, not a bug: one line, no traceback
        return _fail(str(exc), args.command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
