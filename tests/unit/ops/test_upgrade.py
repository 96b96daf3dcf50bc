"""`make upgrade`'s plumbing: the old version's worktree, and running a service from it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ops import upgrade
from ops.stack import BIN, ROOT, Stack, _installed_from, service_argv


def _git(repo: Path, *args: str) -> str:
    return upgrade.git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", *args)


def _commit(repo: Path, text: str) -> str:
    (repo / "version.txt").write_text(text)
    _git(repo, "add", "version.txt")
    _git(repo, "commit", "-q", "-m", text)
    return _git(repo, "rev-parse", "HEAD")


def test_the_worktree_holds_the_ref_and_is_reused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    old = _commit(repo, "old")
    new = _commit(repo, "new")
    place = tmp_path / "infra" / "old"

    path, commit = upgrade.worktree(old[:7], place, repo)
    assert (path, commit) == (place, old)
    assert (place / "version.txt").read_text() == "old"
    assert _git(repo, "rev-parse", "HEAD") == new  # the checkout itself is untouched

    (place / "marker").write_text("kept")  # reused, not made again
    assert upgrade.worktree(old, place, repo) == (place, old)
    assert (place / "marker").exists()

    assert upgrade.worktree(new, place, repo) == (place, new)  # moved to another ref
    assert (place / "version.txt").read_text() == "new"


def test_this_checkout_runs_its_console_scripts() -> None:
    if _installed_from() == ROOT:
        assert service_argv("scheduler") == [str(BIN / "kap-scheduler")]
    else:  # a worktree sharing the main checkout's virtualenv runs its own code
        assert service_argv("scheduler")[:2] == [str(BIN / "python"), "-c"]
    assert Stack(workdir=ROOT, env={}).service_process("scheduler", 0).cwd == ROOT


def test_a_service_from_another_code_dir_imports_that_copy(tmp_path: Path) -> None:
    """The cwd comes before the editable install of this checkout (which has `services` too)."""
    code = tmp_path / "old"
    (code / "services" / "probe").mkdir(parents=True)
    (code / "services" / "__init__.py").write_text("")
    (code / "services" / "probe" / "__init__.py").write_text("")
    (code / "services" / "probe" / "main.py").write_text(
        "def run() -> None:\n    print('probe ran', __file__, flush=True)\n"
    )
    stack = Stack(workdir=tmp_path / "run", env={}, code_dir=code)
    process = stack.service_process("probe", 0)
    assert process.cwd == code
    process.start()
    assert process.popen is not None
    assert process.popen.wait(timeout=30) == 0
    assert upgrade.loaded_from(process) == code
    assert f"probe ran {code}/services/probe/main.py" in process.log_path.read_text()


def test_the_real_old_code_would_load_from_its_worktree() -> None:
    """What `make upgrade` runs: this venv, the worktree's `services` (when it exists)."""
    if not (upgrade.OLD_CODE / "services").exists():
        return
    python = service_argv("scheduler", upgrade.OLD_CODE)[0]
    found = subprocess.run(
        [python, "-c", "import services.scheduler.main as m; print(m.__file__)"],
        cwd=upgrade.OLD_CODE,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert found == str(upgrade.OLD_CODE / "services" / "scheduler" / "main.py")


def test_the_verdict_leaves_out_the_old_versions_own_failures_but_never_a_repeat() -> None:
    counts = {name: 0 for name in upgrade.audit.FAILING}
    result = {
        **counts,
        "stale_reminders": 9,
        "lost": 2,
        "notifications_repeated": 1,
        "old_version_failures": {"stale_reminders": 9, "lost": 1, "notifications_repeated": 1},
    }
    assert upgrade.verdict(result) == {"lost": 1, "notifications_repeated": 1}
    assert upgrade.verdict({**counts, "stale_reminders": 3, "old_version_failures": {}}) == {
        "stale_reminders": 3
    }


def test_an_assignment_short_of_partitions_means_another_member(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    every = "assigned to partitions: " + "TopicPartition(x), " * 4
    half = "assigned to partitions: " + "TopicPartition(x), " * 2
    (logs / "notifier-0.old.log").write_text(f"{every}\n{half}\n")
    (logs / "notifier-0.log").write_text(f"{every}\n")
    (logs / "scheduler-0.log").write_text(f"{every}\n")
    assert upgrade.groups_shared(Stack(workdir=tmp_path, env={})) == 1
