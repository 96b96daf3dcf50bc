"""Flame graphs of the services while the bench measures them (`--profile LABEL`).

py-spy samples each service process from outside (no change to the services; its own
CPU is not counted in the figures, which read the services' and Redis's) for the span
of one measured drain at 100 samples a second, and writes one
SVG per process to `bench/results/flame-<service>-<LABEL>.svg`: run it before and after
a change with two labels and compare the widths.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from ops.stack import BIN, Stack

RATE = 100  # samples per second


@contextlib.contextmanager
def recording(stack: Stack, out: Path, label: str) -> Iterator[list[Path]]:
    """py-spy on every service process of `stack` while the block runs; the SVGs' paths."""
    out.mkdir(parents=True, exist_ok=True)
    spies: list[tuple[subprocess.Popen[bytes], Path]] = []
    for process in stack.processes:
        service = process.name.rsplit("-", 1)[0]
        if service not in stack.services or process.popen is None:
            continue
        svg = out / f"flame-{process.name}-{label}.svg"
        argv = [str(BIN / "py-spy"), "record", "--pid", str(process.popen.pid)]
        argv += ["--rate", str(RATE), "--output", str(svg), "--format", "flamegraph"]
        argv += ["--nonblocking"]
        spy = subprocess.Popen(  # noqa: S603 - our own pinned tool
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        spies.append((spy, svg))
    try:
        yield [svg for _, svg in spies]
    finally:
        for spy, _ in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its flame graph on SIGINT
        for spy, svg in spies:
            try:
                _, err = spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                continue
            if not svg.exists():
                raise RuntimeError(f"py-spy wrote no {svg.name}: {err.decode()[-500:]}")
