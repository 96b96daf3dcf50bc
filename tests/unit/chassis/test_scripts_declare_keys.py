"""Every Redis script names only keys it was handed in KEYS (issue 18).

Redis Cluster routes a script by its declared KEYS: a key a script builds itself (from
ARGV, or by joining strings) may live in another slot, and on one node it may be
another clinic's. The notifier's first claim script did that (`ARGV[5] .. id`); the
check below refuses it (`test_the_old_claim_script_is_refused`), and every script
in the services today passes it. The keys' slot is checked at run time by the unit of
work (`_check_slot`) for scripts queued in a write step.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import chassis
import services

# redis.call("CMD", <first argument>: the key for every command these scripts use but TIME.
_CALL = re.compile(r"redis\.call\(\s*['\"](\w+)['\"]\s*(?:,\s*([^,)]+))?")
_BOUND = [
    re.compile(r"for\s+\w+\s*,\s*(\w+)\s+in\s+ipairs\(KEYS\)"),  # for _, key in ipairs(KEYS)
    re.compile(r"local\s+(\w+)\s*=\s*KEYS\[\d+\]"),  # local key = KEYS[1]
]
KEYLESS = {"TIME"}

OLD_CLAIM = """
local ids = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", ARGV[1])
for _, id in ipairs(ids) do
  local key = ARGV[5] .. id
  local state = redis.call("HGET", key, "state")
  redis.call("HSET", key, "state", "sending")
end
"""


def undeclared(script: str) -> list[str]:
    """The calls in `script` whose key is not one of KEYS."""
    names = {m.group(1) for pattern in _BOUND for m in pattern.finditer(script)}
    found = []
    for match in _CALL.finditer(script):
        command, first = match.group(1).upper(), (match.group(2) or "").strip()
        if command in KEYLESS:
            continue
        if re.fullmatch(r"KEYS\[\d+\]", first) or first in names:
            continue
        found.append(f"{command} {first}")
    return found


def scripts() -> list[tuple[str, str]]:
    """Every module-level string holding a script, in chassis and the services."""
    found = []
    for package in (chassis, services):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if isinstance(value, str) and "redis.call" in value:
                    found.append((f"{info.name}.{name}", value))
    return found


def test_the_scripts_are_found() -> None:
    names = {name for name, _ in scripts()}
    assert {"chassis.leases._CLAIM", "services.notifier.queue._START"} <= names


@pytest.mark.parametrize(("name", "script"), scripts(), ids=lambda v: v if "." in v else "")
def test_a_script_touches_only_keys_it_declares(name: str, script: str) -> None:
    assert undeclared(script) == [], name


def test_the_old_claim_script_is_refused() -> None:
    assert undeclared(OLD_CLAIM) == ["HGET key", "HSET key"]
