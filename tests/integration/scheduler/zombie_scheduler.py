"""A scheduler replica in a consumer group of its own, for the two-consumer test.

    python -m tests.integration.scheduler.zombie_scheduler GROUP_SUFFIX

Two of these read the same partitions at once, as a replica that lost its
partitions in a rebalance but has not noticed yet (a zombie) reads them beside
their new owner. Only the group changes; Kafka, Redis and the service are real.
"""

from __future__ import annotations

import sys

import chassis.kafka
from services.scheduler.main import run


def main() -> None:
    suffix = sys.argv[1]
    chassis.kafka.group_id = lambda service: f"kap-{service}-{suffix}"
    run()


if __name__ == "__main__":
    main()
