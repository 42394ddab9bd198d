"""Argument types and the parser of the command line: a bad value is one line that names the fix.

Each ``type=`` function checks a value while the arguments are parsed, before anything starts,
and raises ``argparse.ArgumentTypeError`` with the reason; :class:`Parser` prints that as a single
line (``clasp-fast peer: error: argument --relay: ...``) and exits with status 2.
"""

from __future__ import annotations

import argparse
import errno
from typing import Callable, NoReturn

__all__ = [
    "Parser",
    "address",
    "client_id",
    "add_metrics_options",
    "listen_error",
    "non_negative_float",
    "non_negative_int",
    "pattern",
    "port",
    "port_or_zero",
    "positive_float",
    "positive_int",
    "relay_url",
]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (no usage block) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def relay_url(text: str) -> str:
    """``ws://host:port`` or ``wss://...``."""
    from ..relay_client import validate_url
    from ..errors import URLError

    try:
        return validate_url(text)
    except URLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str, lowest: int) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if not lowest <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number from {lowest} to 65535")
    return number


def port(text: str) -> int:
    """A TCP port to connect to: 1 to 65535."""
    return _port(text, 1)


def port_or_zero(text: str) -> int:
    """A TCP port to listen on: 0 (any free port) to 65535."""
    return _port(text, 0)


def client_id(text: str) -> str:
    """A peer's client id: one non-empty address segment (it becomes ``/peer/{id}/...``)."""
    if not text or not text.strip():
        raise argparse.ArgumentTypeError("a client id cannot be empty, e.g. --id sensor-1")
    if "/" in text:
        raise argparse.ArgumentTypeError(
            f"client id {text!r} contains '/': it must be one address segment, e.g. "
            f"{text.replace('/', '-')!r}")
    return text


def _checked(text: str, validate: Callable[[str], object], example: str) -> str:
    from ..errors import AddressError

    try:
        validate(text)
    except AddressError as exc:  # PatternError too
        raise argparse.ArgumentTypeError(f"{exc} ({example})") from None
    return text


def address(text: str) -> str:
    """A CLASP address such as ``/sensor/accel``."""
    from ..wire.address import validate_address

    return _checked(text, validate_address, "an address looks like /sensor/accel")


def pattern(text: str) -> str:
    """A subscription pattern such as ``/sensor/**``."""
    from ..wire.address import validate_pattern

    return _checked(text, validate_pattern, "a pattern looks like '/sensor/**'")


def _number(convert: Callable[[str], float], check: Callable[[float], bool], rule: str):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or not check(value):  # NaN fails every rule
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    parse.__name__ = f"number {rule}"
    return parse


positive_float = _number(float, lambda v: 0 < v < float("inf"), "greater than 0")
non_negative_float = _number(float, lambda v: 0 <= v < float("inf"), "0 or more")
non_negative_int = _number(int, lambda v: v >= 0, "0 or more")
positive_int = _number(int, lambda v: v > 0, "greater than 0")


def listen_error(exc: OSError, host: str, port: int) -> str:
    """One line saying why a relay cannot listen on ``host:port`` and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is already in use (another relay, or a `peer` that hosts "
                "one?): stop that process or choose another --port")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return f"cannot listen on {host}: it is not an address of this machine (try 127.0.0.1)"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port} (ports below 1024 need root): choose another --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def add_metrics_options(p) -> None:
    """``--metrics-port`` / ``--metrics-host``: the opt-in Prometheus endpoint (the ``metrics`` extra)."""
    p.add_argument("--metrics-port", type=port_or_zero, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (0 picks a free port; "
                        "needs the 'metrics' extra, prometheus_client)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address of the metrics endpoint (default 127.0.0.1)")
