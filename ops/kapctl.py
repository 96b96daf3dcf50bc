"""kapctl: the operator's command line for a KAP deployment."""

from __future__ import annotations

import argparse
import asyncio
import sys

from chassis.config import ServiceSettings
from chassis.kafka import apply_topics
from shared.topics import ALL


def _topics_apply(args: argparse.Namespace) -> int:
    settings = ServiceSettings()
    created = asyncio.run(
        apply_topics(
            args.bootstrap or settings.kafka_bootstrap_servers,
            args.replication_factor or settings.topic_replication_factor,
        )
    )
    print(f"{len(created)} topic(s) created, {2 * len(ALL) - len(created)} already present")
    for name in created:
        print(f"  + {name}")
    return 0


def _topics_list(_: argparse.Namespace) -> int:
    width = max(len(t.name) for t in ALL)
    for topic in ALL:
        name, producer = f"{topic.name:<{width}}", f"{','.join(topic.producers):<9}"
        print(f"{name}  {topic.partitions:>2}p  {producer}  {topic.description}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kapctl", description="Operate a KAP deployment.")
    commands = root.add_subparsers(dest="command", required=True)

    topics = commands.add_parser("topics", help="the topics defined in shared.topics")
    topic_commands = topics.add_subparsers(dest="action", required=True)
    apply = topic_commands.add_parser("apply", help="create missing topics and dead-letter topics")
    apply.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)"
    )
    apply.add_argument(
        "--replication-factor", type=int, help="(default: $KAP_TOPIC_REPLICATION_FACTOR)"
    )
    apply.set_defaults(run=_topics_apply)
    listing = topic_commands.add_parser("list", help="print the topic catalogue")
    listing.set_defaults(run=_topics_list)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (OSError, ConnectionError) as error:
        print(f"kapctl: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
