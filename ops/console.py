"""`make console`: the three services, the demo's clinics and the clinic console, with a
staff member seeded per role; prints the URL and the sign-ins, serves until Ctrl-C.

The console runs as its own process with the environment docker-compose gives it:
the services' URLs and each clinic's API key (it calls them as the clinic its staff
member works at).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chassis.config import ServiceSettings
from chassis.redis_client import connect_redis
from chassis.replay import DroppingPublisher
from chassis.staff_tokens import Role
from chassis.unit_of_work import UnitOfWork
from ops import demo_clinics
from ops.stack import BIN, ROOT, Process, Stack, free_port
from services.console.staff import Policy, Staff
from services.console.store import ConsoleStore
from shared.events import StaffSignIn

PASSWORD = "console-demo-password"  # noqa: S105 - the local try's seeded accounts only
SESSION_SECRET = "console-local-session-secret-0123456789abcdef"  # noqa: S105 - local only


@dataclass(frozen=True)
class SignIn:
    email: str
    role: str
    clinics: tuple[str, ...]
    group_admin: bool = False


def sign_ins(clinic_ids: list[str]) -> list[SignIn]:
    """A front desk, a clinician and an admin at the first clinic; a group admin of all."""
    first = clinic_ids[0]
    return [
        SignIn(f"frontdesk@{first}.example", Role.FRONT_DESK.value, (first,)),
        SignIn(f"clinician@{first}.example", Role.CLINICIAN.value, (first,)),
        SignIn(f"admin@{first}.example", Role.CLINIC_ADMIN.value, (first,)),
        SignIn("group-admin@kap.example", Role.CLINIC_ADMIN.value, tuple(clinic_ids), True),
    ]


async def _signs_nobody_in(record: StaffSignIn) -> None:
    raise RuntimeError("seeding adds accounts; it signs nobody in")


async def seed(redis_url: str, accounts: list[SignIn], password: str = PASSWORD) -> None:
    """The accounts, written through the console's own write step."""
    redis = connect_redis(redis_url, ServiceSettings().redis_mode)
    try:
        work = UnitOfWork(redis, "console", DroppingPublisher("console"), relayed=False)
        staff = Staff(ConsoleStore(redis), work, Policy(3600, 5, 900), _signs_nobody_in)
        for account in accounts:
            name = account.email.split("@")[0].replace("-", " ").title()
            await staff.add(
                account.email,
                name,
                Role(account.role),
                account.clinics,
                password,
                group_admin=account.group_admin,
            )
    finally:
        await redis.aclose()


def console_process(stack: Stack, clinic_ids: list[str], port: int | None = None) -> Process:
    port = port or free_port()
    env = {
        **stack.service_env(),
        "KAP_HTTP_PORT": str(port),
        "KAP_CONSOLE_INTAKE_URL": stack.url("intake"),
        "KAP_CONSOLE_SCHEDULER_URL": stack.url("scheduler"),
        "KAP_CONSOLE_NOTIFIER_URL": stack.url("notifier"),
        "KAP_CONSOLE_CLINIC_KEYS": json.dumps({c: demo_clinics.api_key(c) for c in clinic_ids}),
        "KAP_CONSOLE_SESSION_SECRET": os.environ.get("KAP_CONSOLE_SESSION_SECRET", SESSION_SECRET),
        "KAP_CONSOLE_SECURE_COOKIES": "false",  # plain http on this machine
    }
    return Process(
        "console-0",
        [str(BIN / "kap-console")],
        env,
        stack.workdir / "logs" / "console-0.log",
        http_port=port,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8005)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".infra" / "console")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    run = args.workdir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    clinics = list(demo_clinics.CLINICS)
    clinics_file = demo_clinics.write(run / "clinics.json")
    # From the clinic registry, as `make demo` and production read them: a clinic admin's
    # message templates are written there (a clinics file would refuse them).
    asyncio.run(demo_clinics.register(args.kafka, json.loads(clinics_file.read_text())))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": args.kafka,
        "REDIS_URL": args.redis,
        "KAP_CLINICS_SOURCE": "topic",
        "KAP_CLINICS_FILE": str(clinics_file),
    }
    stack = Stack(workdir=run, env=env)
    accounts = sign_ins(clinics)
    try:
        with stack.running():
            console = console_process(stack, clinics, args.port)
            stack.processes.append(console)
            console.start()
            console.wait_ready()
            asyncio.run(seed(args.redis, accounts))
            print(f"console: http://127.0.0.1:{console.http_port}/  (logs in {run}/logs)")
            for account in accounts:
                where = "every clinic" if account.group_admin else ", ".join(account.clinics)
                print(f"  {account.email:<32} {PASSWORD}   {account.role} ({where})")
            print("Ctrl-C stops everything", flush=True)
            threading.Event().wait()  # until Ctrl-C (or SIGTERM: the stack raises it)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
