"""`make upgrade`: drain, then switch, from an earlier commit to this checkout, under load.

The earlier version's code is checked out into a git worktree
(`.infra/upgrade/old`, `--from`, default 09340c2) and run with this
virtualenv. Its three services run on the demo's clinics and scaled clock
while clinic staff drive people through the lifecycle over HTTP (the demo's
journeys, plus moves forth and back again, cancellations and booster plan
changes). At the switch instant every old service process gets SIGTERM and
drains (HTTP requests in flight answered, handlers in flight finished and
committed, background loops ending their round); once all have exited, this
checkout's services start on the same Kafka, Redis, HTTP ports, mailbox, SMS
sink, clinics and clock, and the staff carry on (a call made while no service
answers is retried, as behind a load balancer). Afterwards the auditor
(ops/audit.py) reads the run's topics, mailbox and SMS log, and the last line is
`UPGRADE {json}`. The exit code is 1 if the upgrade made any failure: any
repeat, or any other count beyond the old version's own failures before the
drain (the same auditor over what had happened by then, `old_version_failures`,
reported apart; mail resends are reported apart too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from chassis.clock import ScaledClock
from ops import audit, demo, demo_clinics, operations
from ops.audit_rebuild import occurred
from ops.stack import CODE_BANNER, ROOT, SERVICES, Process, Stack
from shared import topics

DEFAULT_FROM = "09340c2"  # the main before issue 14 changed how event ids are derived
OLD_CODE = ROOT / ".infra" / "upgrade" / "old"
NEW_CODE = ROOT / ".infra" / "upgrade" / "new"  # with --to: a commit, not the working tree
# The demo's clinics under names of their own: a demo, chaos or test run meanwhile
# resets the demo clinics' state in Redis, and must not reset this run's.
CLINICS = {f"upgrade-{name}": spec for name, spec in demo_clinics.CLINICS.items()}
AHEAD = timedelta(days=2.5)  # staff move or cancel only sessions this far ahead (before notices)
REPEATS = ("boosters_repeated", "notifications_repeated")
# What the pre-drain audit can judge alone (the sinks' checks need the whole run).
CARRIED = ("overlaps", "rule_violations", "boosters_repeated", "stale_reminders", "lost")


# --- the old code ---------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - git from PATH with our own arguments
        ["git", *args],  # noqa: S607
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def worktree(ref: str, path: Path = OLD_CODE, repo: Path = ROOT) -> tuple[Path, str]:
    """`ref`'s code in a detached worktree at `path` (reused if there): (path, commit)."""
    commit = git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
    if (path / ".git").exists():
        if git(path, "rev-parse", "HEAD") != commit:
            git(path, "checkout", "--quiet", "--detach", commit)
        return path, commit
    path.parent.mkdir(parents=True, exist_ok=True)
    # --force: a worktree registered here earlier whose directory was removed since.
    git(repo, "worktree", "add", "--force", "--detach", str(path), commit)
    return path, commit


def loaded_from(process: Process) -> Path | None:
    """Where a process started by `ops.stack.service_argv` says its `services` came from."""
    if not process.log_path.exists():
        return None
    for line in process.log_path.read_text(errors="replace").splitlines():
        if line.startswith(CODE_BANNER):
            return Path(line.removeprefix(CODE_BANNER).strip()).parent.parent
    return None


# --- other stacks -----------------------------------------------------------------

SERVICE_COMMANDS = tuple(f"kap-{s}" for s in SERVICES) + tuple(
    f"services.{s}.main" for s in SERVICES
)


def other_services() -> list[int]:
    """Pids of KAP services, or of test runs that start them, on this machine (Linux /proc).

    The services' consumer groups are fixed (`kap-<service>`): another stack's
    replicas on the same broker would take partitions of this run's topics and
    handle its events with their own clinics and clock.
    """
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = entry.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        command = " ".join(argv)
        # pytest beyond tests/unit starts services, or their consumers, in the same groups.
        testing = (
            any(a.endswith(("pytest", "pytest.py")) for a in argv[:3]) or "-m pytest" in command
        )
        paths = [a for a in argv if a.startswith("tests")]
        unit_only = bool(paths) and all(a.startswith("tests/unit") for a in paths)
        if any(name in command for name in SERVICE_COMMANDS) or (testing and not unit_only):
            found.append(int(entry.parent.name))
    return found


def wait_alone(wait_s: float) -> list[int]:
    """Until no other stack runs (at most `wait_s`); the pids still running then."""
    deadline = time.monotonic() + wait_s
    while (others := other_services()) and time.monotonic() < deadline:
        print(f"upgrade: waiting for another stack's services to end (pids {others})", flush=True)
        time.sleep(10)
    return others


def groups_shared(stack: Stack) -> int:
    """Assignments that gave this run's replica of a service fewer than all its partitions.

    With one replica per service, and the old ones gone before the new ones
    join, each assignment should hold every partition the service reads; one
    holding fewer means another member of the group (another stack, a test)
    held the rest meanwhile, and handled the run's events on them.
    """
    shared = 0
    for service in SERVICES:
        held = [
            line.count("TopicPartition(")
            for log in sorted(stack.workdir.glob(f"logs/{service}-*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if "assigned to partitions" in line
        ]
        shared += sum(1 for n in held if n < max(held, default=0))
    return shared


# --- the switch -----------------------------------------------------------------


def service_processes(stack: Stack) -> list[Process]:
    return [p for p in stack.processes if p.name.split("-")[0] in SERVICES]


def drain(stack: Stack, grace_s: float = 30.0) -> dict[str, str]:
    """SIGTERM every service process at once; wait for each to exit (SIGKILL after grace)."""
    processes = service_processes(stack)
    for process in processes:
        process.signal(signal.SIGTERM)
    exits: dict[str, str] = {}
    for process in processes:
        assert process.popen is not None
        try:
            code = process.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.signal(signal.SIGKILL)
            process.popen.wait(timeout=5)
            exits[process.name] = "killed after grace"
            continue
        # uvicorn re-raises the SIGTERM it handled once shut down: -15 is the norm.
        shut = "Application shutdown complete" in process.log_path.read_text(errors="replace")
        exits[process.name] = (
            "graceful" if shut and code in (0, -signal.SIGTERM) else f"exit {code}"
        )
    return exits


def switch(stack: Stack, code_dir: Path) -> None:
    """Start `code_dir`'s services in place of the drained ones, on the same HTTP ports."""
    stack.code_dir = code_dir
    started = []
    for index, old in enumerate(list(stack.processes)):
        if old.name.split("-")[0] not in SERVICES:
            continue
        old.log_path.rename(old.log_path.with_suffix(".old.log"))
        service, replica = old.name.split("-")
        new = stack.service_process(service, int(replica), port=old.http_port)
        stack.processes[index] = new
        new.start()
        started.append(new)
    for process in started:
        process.wait_ready()
        if code_dir != ROOT and loaded_from(process) != code_dir:
            raise RuntimeError(f"{process.name} did not load {code_dir}")


# --- the staff ------------------------------------------------------------------


class Staff(demo.Staff):
    """The demo's staff, who also move sessions forth and back, cancel and change boosters.

    Before the switch a mover moves a session a day later and back again; after
    it, the same person moves a session once more and a canceller cancels one.
    Boosters are changed, as soon as a course completes, to every two days, so
    they fall due around the switch and after it.
    """

    def __init__(
        self, replicas: dict[str, list[str]], clock: ScaledClock, tally: demo.Tally
    ) -> None:
        super().__init__(replicas, clock, tally)
        self.switched = asyncio.Event()
        self.actions: dict[str, int] = {
            "moved_later": 0,
            "moved_back": 0,
            "moved_after_switch": 0,
            "cancelled": 0,
            "booster_plans_changed": 0,
        }
        self.refusals: list[str] = []  # what a refused call answered, for the report
        self.others: set[int] = set()  # other stacks' service processes seen meanwhile

    def refused(self, what: str, response: httpx.Response) -> None:
        phase = "new" if self.switched.is_set() else "old"
        self.refusals.append(f"{phase} {what} {response.status_code} {response.text[:160]}")

    async def attend(
        self, person: demo.Person, clinic: str, client: str, schedule: dict[str, Any]
    ) -> None:
        appointments = f"{self.scheduler}/v1/clinics/{clinic}/appointments"
        mover, canceller = person.reschedules or person.number % 6 == 1, person.number % 6 == 3
        moves_before, move_after, missed = ["later", "back"] if mover else [], mover, False
        original: datetime | None = None
        while schedule["course"]["completed_at"] is None:
            upcoming = demo.next_booked(schedule)
            if upcoming is None:
                return
            starts = datetime.fromisoformat(upcoming["starts_at"])
            url = f"{appointments}/{upcoming['appointment_id']}"
            ahead = starts - self.clock.now() > AHEAD
            action: tuple[str, dict[str, str] | None, str] | None = None
            if ahead and not self.switched.is_set() and moves_before:
                step = moves_before.pop(0)
                if step == "later":
                    original, to = starts, starts + timedelta(days=1)
                else:
                    to = original or starts
                action = ("reschedule", {"new_starts_at": to.isoformat()}, f"moved_{step}")
            elif ahead and self.switched.is_set() and canceller:
                canceller = False
                action = ("cancellation", None, "cancelled")
            elif ahead and self.switched.is_set() and move_after:
                move_after = False
                later = (starts + timedelta(days=1)).isoformat()
                action = ("reschedule", {"new_starts_at": later}, "moved_after_switch")
            if action is not None:
                path, body, counted = action
                response = await self.call("POST", f"{url}/{path}", clinic, json=body)
                if response.status_code == 200:
                    self.actions[counted] += 1
                    schedule = response.json()
                    continue
                self.refused(path, response)
                moves_before.clear()  # no room to move: attend it where it is
            miss = person.misses_a_dose and not missed and upcoming.get("dose_number") == 2
            missed = missed or miss
            response = await self.hold(person, clinic, upcoming, miss=miss)
            if response.status_code != 200:
                self.tally.refused["session"] += 1
                self.refused("session", response)
                return
            schedule = response.json()
        self.tally.expected[topics.COURSE_COMPLETED.name] += 1
        self.tally.reached(clinic, "completed")
        plan = {"interval_days": 2, "count": 3, "then_monthly": False}
        url = f"{self.scheduler}/v1/clinics/{clinic}/clients/{client}/booster-plan"
        changed = await self.call("PUT", url, clinic, json=plan)
        if changed.status_code == 200:
            self.actions["booster_plans_changed"] += 1
        else:
            self.tally.refused["booster_plan"] += 1
            self.refused("booster plan", response=changed)


# --- the run --------------------------------------------------------------------


async def drive(
    stack: Stack, clock: ScaledClock, args: argparse.Namespace, new_code: Path
) -> dict[str, Any]:
    tally = demo.Tally()
    staff = Staff(stack.replica_urls(), clock, tally)
    crowd = demo.people(args.people, args.seed, stack.workdir.name)
    for person in crowd:
        person.clinic = f"upgrade-{person.clinic}"
    begun = clock.now()
    second_wave, switch_at = (
        begun + timedelta(days=args.second_wave),
        begun + timedelta(days=args.switch),
    )
    end_at = begun + timedelta(days=args.end)
    first = round(len(crowd) * 0.6)

    async def later(person: demo.Person) -> None:
        await staff.until(second_wave)
        await staff.journey(person, end_at)

    load = asyncio.gather(
        *(staff.journey(p, end_at) for p in crowd[:first]), *(later(p) for p in crowd[first:])
    )
    progress = asyncio.create_task(report_progress(tally, staff, clock, stack))
    try:
        await staff.until(switch_at)
        switched_at = clock.now()
        print(f"upgrade: [{switched_at:%a %d %b %H:%M}] draining the old services", flush=True)
        started = time.monotonic()
        exits = await asyncio.to_thread(drain, stack)
        drained_s = time.monotonic() - started
        print(f"upgrade: drained in {drained_s:.1f} s, exits {exits}; starting new", flush=True)
        await asyncio.to_thread(switch, stack, new_code)
        downtime_s = time.monotonic() - started
        staff.switched.set()
        print(f"upgrade: new services ready, {downtime_s:.1f} s after the drain began", flush=True)
        await asyncio.wait_for(load, timeout=args.timeout)
        await staff.until(end_at)
    finally:
        progress.cancel()
        await staff.http.aclose()
    for refusal in staff.refusals:
        print(f"upgrade: refused: {refusal}", flush=True)
    await demo.settle(args.kafka, tally)
    journal = await audit.read_journal(args.kafka, tally.clients)
    findings = demo.audit_of(stack, tally, journal)
    # Dead letters of this run's people: a fault, or another stack's member of a
    # service's group that took them (it does not know this run's clinics).
    letters = Counter(
        f"{said['service']}: {str(said['error'])[:60]}"
        for said in (letter.summary() for letter in await operations.dead_letters(args.kafka))
        if said["key"] in tally.clients
    )
    # The same auditor over what had happened by the drain: the old version's own failures.
    before = audit.Journal([r for r in journal.records if occurred(r) < switched_at])
    old_version = audit.audit_topics(
        before, maildir=stack.maildir, clinics_file=stack.workdir / "clinics.json"
    )
    return {
        **audit.summary_of(findings),
        "clients": len(tally.clients),
        "courses_completed": len(journal.clients_with(topics.COURSE_COMPLETED.name)),
        "sessions_completed": len(
            {r.value["appointment_id"] for r in journal.of(topics.SESSION_COMPLETED.name)}
        ),
        "sessions_rescheduled": journal.distinct(topics.SESSION_RESCHEDULED.name),
        "sessions_cancelled": journal.distinct(topics.SESSION_CANCELLED.name),
        "boosters_due": published(stack, topics.BOOSTER_DUE.name),
        "notifications_sent": published(stack, topics.NOTIFICATION_SENT.name),
        "staff": staff.actions,
        "refused": dict(tally.refused),
        "old_version_failures": {
            n: old_version.counts()[n] for n in CARRIED if old_version.counts()[n]
        },
        "detail": {k: v for k, v in sorted(findings.detail.items()) if v},
        "drain_exits": exits,
        "drain_seconds": round(drained_s, 1),
        "switch_seconds": round(downtime_s, 1),
        "other_services_seen": sorted(staff.others),
        "dead_letters": dict(letters),
    }


def published(stack: Stack, topic: str) -> dict[str, int]:
    """Events of `topic` the old and the new services published, from their logs."""
    counts = {"old": 0, "new": 0}
    for log in stack.workdir.glob("logs/*.log"):
        version = "old" if log.name.endswith(".old.log") else "new"
        counts[version] += log.read_text(errors="replace").count(f'"published {topic}"')
    return counts


def verdict(result: dict[str, Any]) -> dict[str, int]:
    """The failures the upgrade made: every auditor count, less the old version's own.

    The old version's failures before the drain (say, a reminder it sent after
    the session had started) are reported apart: they are not the upgrade's.
    A repeat always counts, whichever side of the switch its copies fell.
    """
    carried = result["old_version_failures"]
    return {
        name: result[name] - (0 if name in REPEATS else carried.get(name, 0))
        for name in audit.FAILING
        if result[name] - (0 if name in REPEATS else carried.get(name, 0)) > 0
    }


async def report_progress(
    tally: demo.Tally, staff: Staff, clock: ScaledClock, stack: Stack
) -> None:
    while True:
        ours = {p.popen.pid for p in stack.processes if p.popen is not None}
        staff.others.update(pid for pid in other_services() if pid not in ours)
        stages = {stage: sum(c[stage] for c in tally.progress.values()) for stage in demo.STAGES}
        line = " ".join(f"{stage[:5]} {n:>3}" for stage, n in stages.items())
        phase = "new" if staff.switched.is_set() else "old"
        print(f"[{clock.now():%a %d %b}] {phase}: {line}", flush=True)
        await asyncio.sleep(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="ref", default=DEFAULT_FROM, help="the old version")
    parser.add_argument(
        "--to",
        default=None,
        help="the new version as a commit (its own worktree); default: this checkout as it is",
    )
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--day-seconds", type=float, default=2.5)
    parser.add_argument("--second-wave", type=float, default=10, help="clinic days until it")
    parser.add_argument("--switch", type=float, default=20, help="clinic days until the drain")
    parser.add_argument("--end", type=float, default=34, help="clinic days until the end")
    parser.add_argument("--timeout", type=float, default=240, help="real seconds after the switch")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".infra" / "upgrade" / "runs")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--wait-alone", type=float, default=300, help="seconds to wait for other stacks to end"
    )
    args = parser.parse_args(argv)
    if others := wait_alone(args.wait_alone):
        print(f"upgrade: other services still run (pids {others}); figures may be disturbed")
    started = time.monotonic()
    old_code, commit = worktree(args.ref)
    new_code, to, target = ROOT, "working tree", "this checkout"
    if args.to:
        new_code, new_commit = worktree(args.to, NEW_CODE)
        to, target = new_commit[:7], f"{new_commit[:7]} ({new_code})"
    run = args.workdir / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    clinics = demo_clinics.write(run / "clinics.json", CLINICS)
    asyncio.run(demo_clinics.reset(args.redis, CLINICS))
    anchor, scale = datetime.now(UTC), 86400 / args.day_seconds
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": args.kafka,
        "REDIS_URL": args.redis,
        "KAP_CLINICS_FILE": str(clinics),
        "KAP_CLOCK_SCALE": str(scale),
        "KAP_CLOCK_ORIGIN": demo.ORIGIN.isoformat(),
        "KAP_CLOCK_ANCHOR": anchor.isoformat(),
        # The old notifier looks for due messages every 200 ms by default: hours
        # on this clock. Both versions read this setting.
        "KAP_DELIVERY_POLL_MS": "25",
        "KAP_LOG_LEVEL": "INFO",
    }
    clock = ScaledClock(origin=demo.ORIGIN, anchor=anchor, scale=scale)
    print(
        f"upgrade: {commit[:7]} ({old_code}) -> {target}; {args.people} people, "
        f"one clinic day per {args.day_seconds:g} s; logs in {run}/logs",
        flush=True,
    )
    stack = Stack(workdir=run, env=env, code_dir=old_code)
    try:
        with stack.running():
            wrong = {
                p.name: str(loaded_from(p))
                for p in service_processes(stack)
                if loaded_from(p) != old_code
            }
            if wrong:
                print(f"upgrade: the old services did not load {old_code}: {wrong}")
                return 2
            print(f"upgrade: old services ready, their code from {old_code}", flush=True)
            result = asyncio.run(drive(stack, clock, args, new_code))
    except KeyboardInterrupt:
        print("upgrade: interrupted; everything it started has been stopped", file=sys.stderr)
        return 130
    except (httpx.HTTPError, RuntimeError, TimeoutError) as failed:
        print(f"upgrade: failed: {failed!r}", file=sys.stderr)
        return 1
    result = {
        "from": commit[:7],
        "to": to,
        "seconds": round(time.monotonic() - started, 1),
        **result,
    }
    result["groups_shared"] = groups_shared(stack)
    if result["other_services_seen"] or result["dead_letters"] or result["groups_shared"]:
        seen = {k: result[k] for k in ("other_services_seen", "dead_letters", "groups_shared")}
        print(
            "upgrade: not alone on this broker: another member of a service's consumer "
            "group handles some of this run's events, without its clinics; the figures "
            f"are disturbed: {json.dumps(seen, sort_keys=True)}"
        )
    if result["old_version_failures"]:
        carried = json.dumps(result["old_version_failures"], sort_keys=True)
        print(f"upgrade: the old version's own failures before the drain: {carried}")
    failing = verdict(result)
    if failing:
        print(f"Auditor (topics, mailbox, SMS log) found: {json.dumps(failing, sort_keys=True)}")
    print("UPGRADE " + json.dumps(result, sort_keys=True), flush=True)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
