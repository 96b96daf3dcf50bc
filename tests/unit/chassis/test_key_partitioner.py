"""The services' partitioner puts every keyed record where aiokafka's default (the Java
client's murmur2) puts it, so a client's records stay on one partition whoever produces
them; it only remembers each key's hash (issue 19)."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from chassis.kafka import KeyPartitioner

PARTITIONS = st.integers(min_value=1, max_value=120).map(lambda n: list(range(n)))


@given(key=st.binary(max_size=80), partitions=PARTITIONS)
def test_a_keyed_record_goes_where_the_default_partitioner_sends_it(
    key: bytes, partitions: list[int]
) -> None:
    ours = KeyPartitioner()
    expected = DefaultPartitioner()(key, partitions, partitions)
    assert ours(key, partitions, partitions) == expected
    assert ours(key, partitions, partitions) == expected  # and again, from its memory


@given(partitions=PARTITIONS)
def test_a_record_without_a_key_goes_to_an_available_partition(partitions: list[int]) -> None:
    available = partitions[::2]
    assert KeyPartitioner()(None, partitions, available) in available
