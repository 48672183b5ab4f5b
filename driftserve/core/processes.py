"""Child processes: start, read their ready line, wait, forward signals, stop.

The one way driftserve starts a process: ``--workers N`` (N servers on one port), ``driftserve
run`` (server + sidecar), the benchmarks (servers under test) and the tests all use
:func:`start_process`. A driftserve process announces itself with one line,
``DRIFTSERVE_READY key=value ...`` (its ports), which :class:`Child` parses into ``announced``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from driftserve.core.commandline import driftserve_command

logger = logging.getLogger(__name__)

READY_PATTERN = re.compile(r"^DRIFTSERVE_READY\b(.*)$")
# A worker of ``serve --workers`` prints it once it reports ready to clients (see workers.py).
SERVING_LINE = "DRIFTSERVE_SERVING"
# Set in every child's environment: the pid of the process that started it (see follow_parent).
PARENT_PID_ENV = "DRIFTSERVE_PARENT_PID"
_PR_SET_PDEATHSIG = 1
DEFAULT_START_TIMEOUT_S = 180.0
# A supervisor says once which child is slow to become ready after this long.
NOT_READY_NOTICE_S = 30.0
# How long stop() waits after SIGTERM on top of the child's own grace period.
STOP_MARGIN_S = 5.0


@dataclass
class Child:
    """A started process, what it announced on its ready line, and (when kept) its output.

    ``output`` decides where the child's stdout and stderr lines go: ``"relay"`` prints them
    prefixed with the name, ``"keep"`` stores them in ``lines``, a path appends them to that
    log file.
    """

    name: str
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    serving: threading.Event = field(default_factory=threading.Event)  # its SERVING_LINE was read
    announced: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> bool:
        """True once the ready line was read; False if the process exited or time ran out."""
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return self.ready.is_set()
        return True

    def output(self, last: int = 50) -> str:
        """The last kept lines, for an error message."""
        if self.reader is not None:
            self.reader.join(1.0)
        return "".join(self.lines[-last:])

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM, then wait; raises ``subprocess.TimeoutExpired`` (after a kill) if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> int:
        """SIGKILL (as a crash would) and reap; returns the exit code."""
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait()
        if self.reader is not None:
            self.reader.join(5.0)
        return code


def start_process(
    name: str,
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    output: str | Path = "relay",
) -> Child:
    """Start ``command``; a reader thread parses its ready line and routes its output lines."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if output != "relay" else None,
        text=True,
        cwd=cwd,
        env={**os.environ, PARENT_PID_ENV: str(os.getpid()), **(env or {})},
    )
    child = Child(name, process)
    sink: IO[str] | None = None
    if output not in ("relay", "keep"):
        sink = Path(output).open("a")  # noqa: SIM115 - the reader thread closes it at EOF
    child.reader = threading.Thread(target=_read, args=(child, output, sink), daemon=True, name=f"read-{name}")
    child.reader.start()
    return child


def start_child(
    name: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
    output: str | Path = "relay",
) -> Child:
    """``driftserve ARGV`` as a child process (see :func:`start_process`)."""
    return start_process(name, driftserve_command(*argv), env=env, cwd=cwd, output=output)


def _read(child: Child, output: str | Path, sink: IO[str] | None) -> None:
    assert child.process.stdout is not None
    try:
        for line in child.process.stdout:
            stripped = line.strip()
            if stripped == SERVING_LINE:
                child.serving.set()
                continue
            match = READY_PATTERN.match(stripped)
            if match and not child.ready.is_set():
                child.announced = dict(kv.split("=", 1) for kv in match.group(1).split() if "=" in kv)
                child.ready.set()
                if output == "relay":
                    continue
            if output == "relay":
                sys.stdout.write(f"[{child.name}] {line}")
                sys.stdout.flush()
            elif sink is not None:
                sink.write(line)
                sink.flush()
            else:
                child.lines.append(line)
    except (ValueError, OSError):
        return  # the pipe was closed under us at teardown
    finally:
        child.process.stdout.close()
        if sink is not None:
            sink.close()


@contextlib.contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event SIGTERM or SIGINT sets, for a supervisor's main thread; handlers restored after."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def forward_sighup(children: list[Child], enabled: bool) -> Iterator[None]:
    """While open, a SIGHUP to this supervisor goes on to every child that printed its ready line
    (they re-read their tokens file); handler restored after. Only ``enabled`` where the children
    handle SIGHUP, that is with a tokens file: without one, and before its ready line, a child keeps
    SIGHUP's default action, which would end it."""
    if not enabled:
        yield
        return

    def forward(*_: object) -> None:
        for child in children:
            if child.ready.is_set() and child.process.poll() is None:
                child.process.send_signal(signal.SIGHUP)

    previous = signal.signal(signal.SIGHUP, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def wait_ready(
    children: list[Child],
    stop: threading.Event | None = None,
    timeout_s: float | None = None,
    line: Callable[[Child], threading.Event] = lambda child: child.ready,
) -> Child | None:
    """Wait until every child printed its ready line (or the ``line`` whose event is given); the
    first child that did not, or None.

    A child that exits first is returned at once. Without ``timeout_s`` a supervisor waits as long
    as its children run: a server whose models are still loading, or of which none could load,
    stays up not ready (as a single ``serve`` does) rather than being killed after a guess.
    ``stop`` (a signal) ends the wait too; the caller checks it.
    """
    started = time.monotonic()
    reported: set[str] = set()
    while not all(line(child).is_set() for child in children):
        for child in children:
            if not line(child).is_set() and child.process.poll() is not None:
                logger.error("%s exited with code %s before it was ready", child.name, child.process.returncode)
                return child
        waited = time.monotonic() - started
        if timeout_s is not None and waited > timeout_s:
            return next(child for child in children if not line(child).is_set())
        if waited > NOT_READY_NOTICE_S:
            for child in children:
                if not line(child).is_set() and child.name not in reported:
                    reported.add(child.name)
                    logger.warning("%s is not ready after %.0f s; still waiting (see its log)", child.name, waited)
        if stop is not None and stop.wait(0.05):
            return None
        if stop is None:
            time.sleep(0.05)
    return None


def supervise(children: list[Child], grace_s: float, stop: threading.Event | None = None) -> int:
    """Block until ``stop`` (SIGTERM/SIGINT) or a child exits; then stop all and return an exit code."""
    if stop is None:
        with stop_signals() as own:
            return supervise(children, grace_s, own)
    failed = False
    while not stop.wait(0.2):
        exited = [c for c in children if c.process.poll() is not None]
        if exited:
            for child in exited:
                logger.error("%s exited with code %s; stopping the others", child.name, child.process.returncode)
            failed = True
            break
    codes = stop_children(children, grace_s)
    return 1 if failed or any(code != 0 for code in codes) else 0


def stop_children(children: list[Child], grace_s: float) -> list[int]:
    """SIGTERM every child, wait up to the grace period (+5 s), then kill what is left."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + STOP_MARGIN_S
    codes = []
    for child in children:
        try:
            codes.append(child.process.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            logger.error("%s did not stop in time; killing it", child.name)
            codes.append(child.kill())
    return codes


def follow_parent() -> None:
    """In a child started by :func:`start_process`: get SIGTERM when that parent dies.

    A supervisor killed with SIGKILL (``--workers``, ``driftserve run``, a test harness) cannot
    stop its children itself; without this they would keep serving, orphaned, on their ports.
    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op. The signal follows the thread
    that started the child, which is the supervisor's main thread here.
    """
    parent = os.environ.pop(PARENT_PID_ENV, "")
    if not parent.isascii() or not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("cannot follow the parent process: prctl failed (errno %d)", ctypes.get_errno())
        return
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
