"""``python -m clasp_fast`` / ``clasp-fast``: the command line.

Each subcommand is a function ``add_<name>(subparsers)`` that registers its parser and
sets ``func``; ``main`` dispatches.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clasp-fast", description=__doc__.splitlines()[0])
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
    p.add_argument("--port", type=int, default=7330, help="port (default 7330; 0 = any free port)")
    p.add_argument("--name", default="clasp_fast relay", help="router name sent in WELCOME")
    p.add_argument("--max-sessions", type=int, default=100)
    p.add_argument("--max-subscriptions", type=int, default=1000, help="per session")
    p.add_argument("--rate-limit", type=int, default=None, metavar="MSG_PER_S",
                   help="per-session message rate limit (default off; the reference uses 1000)")
    p.add_argument("--queue-size", type=int, default=1024, help="outgoing frames queued per session")
    p.add_argument("--no-gesture-coalescing", action="store_true")

    def run(args) -> int:
        import asyncio
        import logging

        from .relay import Relay

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

        async def serve() -> None:
            relay = await Relay.start(
                args.host, args.port, name=args.name, max_sessions=args.max_sessions,
                max_subscriptions=args.max_subscriptions, rate_limit=args.rate_limit,
                queue_size=args.queue_size,
                gesture_coalesce=None if args.no_gesture_coalescing else 0.016)
            print(f"clasp_fast relay listening on {relay.url}", flush=True)
            try:
                await relay.serve_forever()
            finally:
                await relay.close()

        asyncio.run(serve())
        return 0

    p.set_defaults(func=run)


SUBCOMMANDS.append(add_relay)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
