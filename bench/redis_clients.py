"""Redis bytes and keys per client, over the clinics' keys (issue 18's measure).

    python -m bench.redis_clients --redis redis://127.0.0.1:6379/0 --clinic lisbon ...

Every key of a clinic carries its `{clinic_id}` hash tag, so one SCAN pattern finds all
of them, whichever service wrote them; each key's bytes are Redis's own `MEMORY USAGE`
(key, value and overhead). Per client is the clinics' whole footprint (clinic-wide keys
such as calendars and booking sets included) over the clients they hold: those with a
scheduler schedule or an intake record. Taken after the clients' courses ended, it is
what Redis keeps per client beyond what the services still act on. Families (ids
replaced by `<id>`) show where the bytes are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32,}")
_CLIENT = re.compile(r"^(?:sched|intake):\{[^}]+\}:client:([0-9a-f-]{36})$")


def family(key: str) -> str:
    return _ID.sub("<id>", re.sub(r"\{[^}]+\}", "{c}", key))


async def footprint(redis: Redis, clinic_ids: Iterable[str]) -> dict[str, Any]:
    """Bytes and keys per client of `clinic_ids`, and the biggest key families."""
    clients: set[str] = set()
    total_bytes, total_keys = 0, 0
    families: Counter[str] = Counter()
    for clinic_id in clinic_ids:
        async for raw in redis.scan_iter(match=f"*{{{clinic_id}}}*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            size = int(await redis.memory_usage(key) or 0)
            total_bytes, total_keys = total_bytes + size, total_keys + 1
            families[family(key)] += size
            found = _CLIENT.match(key)
            if found:
                clients.add(f"{clinic_id}/{found.group(1)}")
    per = max(len(clients), 1)
    return {
        "clients": len(clients),
        "redis_bytes": total_bytes,
        "redis_keys": total_keys,
        "redis_bytes_per_client": round(total_bytes / per),
        "redis_keys_per_client": round(total_keys / per, 1),
        "families": dict(families.most_common(12)),
    }


async def _main(url: str, clinic_ids: list[str]) -> dict[str, Any]:
    redis = Redis.from_url(url)
    try:
        return await footprint(redis, clinic_ids)
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--clinic", action="append", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_main(args.redis, args.clinic)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
