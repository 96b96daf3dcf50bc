"""Topics sized by the deployment (KAP_TOPIC_PARTITIONS*, KAP_RECORD_RETENTION_DAYS) and the
consumer group's settings, each refused at start when it cannot work, naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chassis.config import ServiceSettings
from chassis.kafka import configured_topics
from shared.topics import ALL, DAY_MS, PUBLIC_STAGE_REACHED, SESSION_SCHEDULED


def _settings(**env: object) -> ServiceSettings:
    return ServiceSettings(**env)  # type: ignore[arg-type]


def test_partitions_default_and_per_topic_override() -> None:
    settings = _settings(
        KAP_TOPIC_PARTITIONS=12, KAP_TOPIC_PARTITIONS_BY_TOPIC={SESSION_SCHEDULED.name: 24}
    )
    sized = {topic.name: topic for topic in configured_topics(settings)}
    assert sized[SESSION_SCHEDULED.name].partitions == 24
    assert {t.partitions for n, t in sized.items() if n != SESSION_SCHEDULED.name} == {12}
    assert len(sized) == len(ALL)


def test_record_topics_keep_the_retention_setting_and_public_topics_their_own() -> None:
    sized = {t.name: t for t in configured_topics(_settings(KAP_RECORD_RETENTION_DAYS=10))}
    lifecycle = sized[SESSION_SCHEDULED.name].kafka_config()
    assert lifecycle["retention.ms"] == str(10 * DAY_MS)
    public = sized[PUBLIC_STAGE_REACHED.name].kafka_config()
    assert public["retention.ms"] == PUBLIC_STAGE_REACHED.kafka_config()["retention.ms"]


def test_default_retention_is_seven_years() -> None:
    sized = {t.name: t for t in configured_topics(_settings())}
    assert sized[SESSION_SCHEDULED.name].kafka_config()["retention.ms"] == str(7 * 365 * DAY_MS)


def test_a_partition_override_for_an_unknown_topic_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"names no topic: scheduler\.typo\.v1"):
        _settings(KAP_TOPIC_PARTITIONS_BY_TOPIC={"scheduler.typo.v1": 3})


def test_a_heartbeat_too_long_for_the_session_timeout_is_refused() -> None:
    with pytest.raises(ValidationError, match="KAP_CONSUMER_HEARTBEAT_INTERVAL_MS"):
        _settings(KAP_CONSUMER_SESSION_TIMEOUT_MS=3000, KAP_CONSUMER_HEARTBEAT_INTERVAL_MS=2000)


def test_partitions_below_one_are_refused() -> None:
    with pytest.raises(ValidationError, match="KAP_TOPIC_PARTITIONS"):
        _settings(KAP_TOPIC_PARTITIONS=0)
