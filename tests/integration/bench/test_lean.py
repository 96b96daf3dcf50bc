"""The lean reference pipeline (bench.lean) on real Kafka and Redis: its outcomes, never timings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench import lean, raw, workload
from ops.reading import read_to_end
from shared.envelope import HEADER_CAUSATION, HEADER_ID

pytestmark = pytest.mark.integration


async def test_each_input_gives_one_output_and_one_mark_and_a_replay_gives_none(
    kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    clinic_ids = list(workload.clinics(unique, 3))
    messages = workload.lifecycle_mix(clinic_ids, 300, datetime.now(UTC), seed=7)
    inputs = await lean.produce(kafka_bootstrap, messages)
    outputs_from = await raw.ends(kafka_bootstrap, lean.OUT_TOPIC)

    first = await lean.consume(kafka_bootstrap, redis_url, inputs)
    # A second group over the same inputs: every mark is set already.
    replay = await lean.consume(kafka_bootstrap, redis_url, inputs)

    sent = {dict(m.headers)[HEADER_ID].decode() for m in messages}
    assert first["consumed"] == first["outputs"] == first["marks"] == len(messages) == len(sent)
    assert replay["consumed"] == len(messages)
    assert replay["outputs"] == replay["outputs_sent"] == 0
    assert replay["marks"] == len(messages)  # none new
    outputs = await read_to_end(kafka_bootstrap, [lean.OUT_TOPIC], since=outputs_from)
    causes = [dict(r.headers)[HEADER_CAUSATION].decode() for r in outputs]
    assert sorted(causes) == sorted(sent)  # one output per input, none twice
    assert first["cpu_s_per_1k"] > 0
    await lean.count_keys(redis_url, f"lean:*:{inputs.run}:*", delete=True)
