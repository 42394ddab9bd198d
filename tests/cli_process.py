"""Run ``python -m clasp_fast ...`` as a child process and read its output line by line, with deadlines."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the command to its end; returns the finished process with text output."""
    return subprocess.run([sys.executable, "-m", "clasp_fast", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


class CliProcess:
    """A running ``python -m clasp_fast`` command; its stdout and stderr are read by threads.

    ``lines`` holds every stdout line so far; :meth:`wait_for` waits (bounded) for a line matching a
    regular expression. Use as a context manager: on exit the process is killed if still running and
    its pipes are closed.
    """

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process = subprocess.Popen([sys.executable, "-m", "clasp_fast", *args], cwd=REPO_ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.err: list[str] = []
        self._new = threading.Condition()
        self._threads = [threading.Thread(target=self._read, args=(self.process.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read(self, stream, store: list[str]) -> None:
        for line in stream:
            with self._new:
                store.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> int:
        """Index of the first stdout line from ``start`` on matching ``pattern``; AssertionError after
        ``timeout`` seconds or when the process ended without printing it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                ended = not self._threads[0].is_alive()  # before the scan: its last line is in
                for index in range(start, len(self.lines)):
                    if regex.search(self.lines[index]):
                        return index
                remaining = deadline - time.monotonic()
                if remaining <= 0 or ended:
                    raise AssertionError(f"{' '.join(self.args)}: no line matching {pattern!r} within "
                                         f"{timeout} s; stdout:\n" + "\n".join(self.lines)
                                         + "\nstderr:\n" + "\n".join(self.err[-30:]))
                self._new.wait(min(remaining, 0.5))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit status (killed after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for thread in self._threads:
                thread.join(10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for thread in self._threads:
            thread.join(10)
        self.process.stdout.close()
        self.process.stderr.close()

    def __enter__(self) -> "CliProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
