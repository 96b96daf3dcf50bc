"""Every HTTP API fuzzed from its own OpenAPI document (schemathesis): whatever
arrives, no 5xx, no crash, and every answer's status is one its document lists.
The services run as processes, as deployed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import status_code_conformance

from ops.stack import SERVICES, Stack
from tests.helpers import CLINICS, write_clinics

# A clinic of its own: fuzzed PUTs really change its calendar in the shared Redis.
FUZZED = f"fuzz-{uuid.uuid4().hex[:8]}"
KEY = f"{FUZZED}-key"

pytestmark = pytest.mark.integration
EXAMPLES_PER_OPERATION = 12


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "KAP_CLINICS_FILE": str(
            write_clinics(
                workdir / "clinics.json",
                {**CLINICS, FUZZED: {"name": "Fuzz", "timezone": "Europe/Lisbon", "key": KEY}},
            )
        ),
    }
    stack = Stack(workdir=workdir, env=env)
    with stack.running():
        yield stack


@pytest.mark.parametrize("service", SERVICES)
def test_no_input_makes_a_service_fail_or_crash(stack: Stack, service: str) -> None:
    base = stack.url(service)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy(), own_clinic=st.booleans())
        def probe(case: schemathesis.Case, own_clinic: bool) -> None:
            headers = {}
            if "clinic_id" in (case.path_parameters or {}) and own_clinic:
                # Half the cases get past authentication, to reach the handlers.
                case.path_parameters["clinic_id"] = FUZZED
                headers["X-API-Key"] = KEY
            response = case.call(base_url=base, headers=headers, timeout=30)
            try:
                # A status the document does not list is a failure too: clients
                # generated from it would not expect it.
                case.validate_response(
                    response, checks=[not_a_server_error, status_code_conformance]
                )
            except (Failure, FailureGroup) as failed:
                found = failed.exceptions if isinstance(failed, FailureGroup) else (failed,)
                for failure in found:
                    failures.append(
                        f"{case.method} {case.formatted_path}: {response.status_code} "
                        f"{failure.title}"
                    )

        probe()
    assert sorted(set(failures)) == []
    process = next(p for p in stack.processes if p.name == f"{service}-0")
    assert process.alive
