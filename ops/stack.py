"""Run the whole system as separate processes on this machine.

The same commands and environment as docker-compose (`kap-intake`, ...), plus
the local SMTP server and SMS provider. Used by `make demo`, the end-to-end
tests, chaos and the benchmark. Everything started is stopped on exit, also
on Ctrl-C; replicas of a service are just more processes in its group.
A stack may run another version's code (`code_dir`, e.g. a git worktree of
an earlier commit) with this virtualenv: see `make upgrade` (ops/upgrade.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from chassis.kafka import group_id
from ops.operations import consumer_lag

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVICES = ("intake", "scheduler", "notifier")
# The services with a consumer group (intake consumes nothing); `webhooks` runs where
# asked for (the demo, chaos): the bench measures the three.
CONSUMING = ("scheduler", "notifier", "webhooks")


# Listening ports are taken below the kernel's ephemeral range (32768-60999 on Linux): a
# port the kernel hands out (`bind(0)`) may be handed out again, between our close and
# the service's bind, to any outgoing connection (a Kafka or Redis client's), and the
# service then fails with "address already in use" (seen in CI: a bench's notifier).
LISTEN_PORTS = range(20000, 32000)


def free_port() -> int:
    """A port free on loopback now, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)  # noqa: S311 - spreading ports, not secrets
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


CODE_BANNER = "kap code:"


@functools.cache
def _installed_from() -> Path:
    """The checkout the virtualenv's console scripts run: another one when this is a git
    worktree sharing the main checkout's virtualenv (then its code runs as `code_dir`)."""
    found = subprocess.run(  # noqa: S603 - our own interpreter
        [str(BIN / "python"), "-c", "import services; print(services.__file__)"],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(found.stdout.strip()).resolve().parent.parent


def service_argv(service: str, code_dir: Path = ROOT) -> list[str]:
    """The command running `service` from `code_dir` (run with `code_dir` as the cwd).

    This checkout's code is its console script. Another directory's is
    `python -c` from there: the cwd comes first on sys.path, before the editable
    install of this checkout, and the process names the copy it loaded first.
    """
    if code_dir == ROOT and _installed_from() == ROOT:
        return [str(BIN / f"kap-{service}")]
    run = (
        f"import services; print({CODE_BANNER!r}, services.__file__, flush=True); "
        f"from services.{service}.main import run; run()"
    )
    return [str(BIN / "python"), "-c", run]


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    http_port: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    cwd: Path = ROOT

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(  # noqa: S603 - our own console scripts
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            start_new_session=True,  # Ctrl-C in the terminal reaches the runner only
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive and self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def stop(self, grace_s: float = 20.0) -> None:
        if self.popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout=5)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            if self.http_port is None:
                return
            with contextlib.suppress(OSError):
                ready = f"http://127.0.0.1:{self.http_port}/readyz"
                with urllib.request.urlopen(ready, timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")


@dataclass
class Stack:
    """The three services (N replicas each), the SMTP server and the SMS provider."""

    workdir: Path
    env: dict[str, str]
    replicas: int = 1
    processes: list[Process] = field(default_factory=list)
    smtp_port: int = field(default_factory=free_port)
    sms_port: int = field(default_factory=free_port)
    # intake-0's port, known before it starts: the measure links the notifier sends point here.
    public_port: int = field(default_factory=free_port)
    # The services' code: ROOT runs this checkout (the installed console scripts);
    # another directory holding `services/`, `chassis/` and `shared/` runs that copy.
    code_dir: Path = ROOT
    # Which services run: all three, or a part (the bench's due-work case needs no intake).
    services: tuple[str, ...] = SERVICES
    # The services' HTTP ports, taken in turn; once none are left, any free port.
    ports: list[int] = field(default_factory=list)

    @property
    def maildir(self) -> Path:
        return self.workdir / "mail"

    @property
    def sms_log(self) -> Path:
        return self.workdir / "sms.jsonl"

    def service_env(self) -> dict[str, str]:
        """What docker-compose sets, pointed at this machine's Kafka, Redis, SMTP and SMS."""
        return {
            # Every simulated person calls from this machine's one address: the
            # per-address limits would refuse the crowd (the per-client ones still count).
            "KAP_FORM_RATE_PER_ADDRESS": "0",
            "KAP_CONSULTATION_RATE_PER_ADDRESS": "0",
            **os.environ,
            **self.env,
            "KAP_SMTP_HOST": "127.0.0.1",
            "KAP_SMTP_PORT": str(self.smtp_port),
            "KAP_SMS_API_URL": f"http://127.0.0.1:{self.sms_port}",
            "KAP_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.public_port}",
        }

    def replica_urls(self) -> dict[str, list[str]]:
        return {
            service: [self.url(service, r) for r in range(self.replicas)]
            for service in self.services
        }

    def url(self, service: str, replica: int = 0) -> str:
        process = next(p for p in self.processes if p.name == f"{service}-{replica}")
        return f"http://127.0.0.1:{process.http_port}"

    def start(self) -> None:
        python = str(BIN / "python")
        self.processes += [
            Process(
                "smtp",
                [
                    python,
                    "-m",
                    "ops.mailcatcher",
                    "--port",
                    str(self.smtp_port),
                    "--maildir",
                    str(self.maildir),
                ],
                dict(os.environ),
                self.workdir / "logs" / "smtp.log",
            ),
            Process(
                "sms",
                [
                    python,
                    "-m",
                    "ops.sms_sink",
                    "--port",
                    str(self.sms_port),
                    "--log",
                    str(self.sms_log),
                ],
                dict(os.environ),
                self.workdir / "logs" / "sms.log",
            ),
        ]
        for service in self.services:
            for replica in range(self.replicas):
                self.processes.append(self.service_process(service, replica))
        for process in self.processes:
            process.start()
        for process in self.processes:
            process.wait_ready()
        self.wait_caught_up()

    def wait_caught_up(self, timeout_s: float = 180.0) -> None:
        """Until the services' groups have handled what was waiting for them.

        A broker shared with earlier runs (tests, benchmarks, demos) may hold
        thousands of events for the groups; handled after this run's own, they
        would make its events late (a mail planned before its contact was known).
        """
        bootstrap = self.service_env().get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        deadline = time.monotonic() + timeout_s
        while True:
            # In a thread of its own: callers may be inside an event loop (the bench).
            groups = [group_id(s) for s in self.services if s in CONSUMING]
            with ThreadPoolExecutor(1) as pool:
                lags = pool.submit(asyncio.run, consumer_lag(bootstrap, groups)).result()
            behind = sum(lag.behind for lag in lags)
            if behind == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the services are still {behind} events behind")
            print(f"stack: catching up on {behind} earlier events", flush=True)
            time.sleep(1.0)

    def service_process(self, service: str, replica: int, port: int | None = None) -> Process:
        front = service == "intake" and replica == 0
        port = port or (
            self.public_port if front else self.ports.pop(0) if self.ports else free_port()
        )
        env = {**self.service_env(), "KAP_HTTP_PORT": str(port)}
        return Process(
            f"{service}-{replica}",
            service_argv(service, self.code_dir),
            env,
            self.workdir / "logs" / f"{service}-{replica}.log",
            http_port=port,
            cwd=self.code_dir,
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        previous = signal.getsignal(signal.SIGTERM)
        # A SIGTERM to the runner stops the stack like Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            self.start()
            yield self
        finally:
            self.stop()
            signal.signal(signal.SIGTERM, previous)
