"""Supervising child processes: start, wait for their ready line, forward signals, stop.

Used by ``--workers N`` (N servers on one port) and by ``driftserve run`` (server + sidecar).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

READY_PATTERN = re.compile(r"^DRIFTSERVE_READY\b(.*)$")
DEFAULT_START_TIMEOUT_S = 180.0


@dataclass
class Child:
    """A supervised process and what it announced on its ready line."""

    name: str
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    announced: dict[str, str] = field(default_factory=dict)


def start_child(name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
    """Start ``python -m server.cli ...``; its stdout is relayed with a name prefix."""
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        env={**os.environ, **(env or {})},
    )
    child = Child(name, process)
    threading.Thread(target=_relay, args=(child,), daemon=True, name=f"relay-{name}").start()
    return child


def _relay(child: Child) -> None:
    assert child.process.stdout is not None
    for line in child.process.stdout:
        match = READY_PATTERN.match(line.strip())
        if match:
            child.announced = dict(kv.split("=", 1) for kv in match.group(1).split() if "=" in kv)
            child.ready.set()
            continue
        sys.stdout.write(f"[{child.name}] {line}")
        sys.stdout.flush()


def wait_ready(children: list[Child], timeout_s: float = DEFAULT_START_TIMEOUT_S) -> bool:
    """True when every child printed its ready line; False if one exited or time ran out."""
    deadline = time.monotonic() + timeout_s
    for child in children:
        while not child.ready.wait(0.1):
            if child.process.poll() is not None or time.monotonic() > deadline:
                logger.error("%s did not become ready (exit code %s)", child.name, child.process.poll())
                return False
    return True


def supervise(children: list[Child], grace_s: float) -> int:
    """Block until SIGTERM/SIGINT or a child exits; then stop all and return an exit code."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        while not stop.wait(0.2):
            exited = [c for c in children if c.process.poll() is not None]
            if exited:
                for child in exited:
                    logger.error("%s exited with code %s; stopping the others", child.name, child.process.returncode)
                failed = True
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = stop_children(children, grace_s)
    return 1 if failed or any(code != 0 for code in codes) else 0


def stop_children(children: list[Child], grace_s: float) -> list[int]:
    """SIGTERM every child, wait up to the grace period (+5 s), then kill what is left."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 5.0
    codes = []
    for child in children:
        try:
            codes.append(child.process.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            logger.error("%s did not stop in time; killing it", child.name)
            child.process.kill()
            codes.append(child.process.wait())
    return codes
