"""``--lan``: two network namespaces joined by a veth pair, so benchmark traffic crosses a real IP stack.

Side ``a`` holds the relay and the sending peer, side ``b`` the receiving peer. The addresses
(``10.201.0.1`` and ``10.201.0.2``) exist only inside the two namespaces this module creates;
nothing is routed to or from the host's own interfaces. Namespaces are named
``clasp-bench-<runner pid>-a|b``; :meth:`LanNamespaces.teardown` deletes them (the veth pair
goes with them), and :func:`remove_stale` deletes those of runners that no longer exist.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

__all__ = ["LanNamespaces", "unavailable_reason", "remove_stale", "list_bench_namespaces", "NAMESPACE_PREFIX"]

NAMESPACE_PREFIX = "clasp-bench-"
SUBNET_PREFIX = "10.201.0."
_NAME = re.compile(r"^clasp-bench-(\d+)-[ab]$")


def unavailable_reason() -> str | None:
    """Why ``--lan`` cannot run here, or None when it can."""
    if not hasattr(os, "geteuid"):
        return "network namespaces exist only on Linux"
    if os.geteuid() != 0:
        return f"creating network namespaces and a veth pair needs root (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "the iproute2 'ip' command is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def list_bench_namespaces() -> list[str]:
    """Names of the benchmark namespaces that exist now (any runner's)."""
    if shutil.which("ip") is None:
        return []
    listing = _ip("netns", "list", check=False).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return [name for name in names if name.startswith(NAMESPACE_PREFIX)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete benchmark namespaces whose runner process is gone; returns their names."""
    removed = []
    for name in list_bench_namespaces():
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


class LanNamespaces:
    """The two namespaces of one run; create with :meth:`setup`, always :meth:`teardown`."""

    def __init__(self, owner_pid: int | None = None) -> None:
        pid = os.getpid() if owner_pid is None else owner_pid
        self.names = {"a": f"{NAMESPACE_PREFIX}{pid}-a", "b": f"{NAMESPACE_PREFIX}{pid}-b"}
        self.addresses = {"a": SUBNET_PREFIX + "1", "b": SUBNET_PREFIX + "2"}
        self._links = {"a": f"cbv{pid}a"[:15], "b": f"cbv{pid}b"[:15]}
        self.created: list[str] = []

    def setup(self) -> None:
        """Create both namespaces, the veth pair between them and their addresses.

        Raises ``RuntimeError`` with ip's message when a step fails (what was created is removed).
        """
        remove_stale()
        a, b = self.names["a"], self.names["b"]
        try:
            for side in ("a", "b"):
                self._run("netns", "add", self.names[side])
                self.created.append(self.names[side])
            self._run("link", "add", self._links["a"], "netns", a, "type", "veth",
                      "peer", "name", self._links["b"], "netns", b)
            for side in ("a", "b"):
                ns, link = self.names[side], self._links[side]
                self._run("-n", ns, "link", "set", "lo", "up")
                self._run("-n", ns, "addr", "add", self.addresses[side] + "/24", "dev", link)
                self._run("-n", ns, "link", "set", link, "up")
        except BaseException:
            self.teardown()
            raise

    def _run(self, *args: str) -> None:
        result = _ip(*args, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip() or result.returncode}")

    def command(self, side: str, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace of ``side`` (``"a"`` or ``"b"``)."""
        return ["ip", "netns", "exec", self.names[side], *argv]

    def teardown(self) -> None:
        """Delete the namespaces (and with them the veth pair). Safe to call twice."""
        for name in reversed(self.created):
            _ip("netns", "del", name, check=False)
        self.created.clear()

    def describe(self) -> str:
        return (f"veth pair between network namespaces {self.names['a']} ({self.addresses['a']}: relay, sender) "
                f"and {self.names['b']} ({self.addresses['b']}: receiver)")
