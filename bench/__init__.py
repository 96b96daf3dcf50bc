"""`make bench`: the system measured against the raw Kafka client, and the scheduler's figures."""
