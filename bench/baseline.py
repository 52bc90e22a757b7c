"""The script a user would write instead: one asyncio + httpx loop, no queue, no database.

It orders every number at once, polls each order at a fixed interval until its code comes or
its timeout passes, then cancels it. A 429 is slept off for its Retry-After and retried, the
usual thing to do with one. Everything above ``# -- bench instrumentation`` is
what the user would write; below it only records what the benchmark needs (when each code
was stored, the CPU the batch used) and runs the script from a JSON settings file:

    LEGITSMS_API_KEY=... python -m bench.baseline SETTINGS.json RESULT.json
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass
class Batch:
    """What the script is asked to do, and what it has found so far."""

    service: int
    country: int
    count: int
    poll_interval: float
    timeout: float
    codes: dict[str, str] = field(default_factory=dict)
    stored_at: dict[str, float] = field(default_factory=dict)  # bench: when each code was kept
    cancelled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass
class Api:
    """The provider over one connection pool, at most ``MAX_IN_FLIGHT`` requests at a time.

    Without the semaphore, all tasks queue inside httpx's pool, which copes badly with that
    many waiters: at 2,000 numbers the script died of PoolTimeout; with the pool timeout
    off, it bought its first number only after 30 s and burned 114 ms of CPU per number.
    A user running 2,000 numbers would have met that and added the semaphore.
    """

    http: httpx.AsyncClient
    in_flight: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_IN_FLIGHT))

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async with self.in_flight:
            return await self.http.request(method, path, **kw)


MAX_IN_FLIGHT = 100  # httpx's default pool size


async def call(api: Api, method: str, path: str, **kw: Any) -> httpx.Response:
    """Send one request; on 429, sleep the Retry-After it names and send it again."""
    while True:
        response = await api.request(method, path, **kw)
        if response.status_code != 429:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "2")))


async def activate(http: Api, batch: Batch) -> None:
    """Buy one number, wait for its code, cancel it at the timeout."""
    ordered = await call(
        http, "POST", "/order", data={"service": batch.service, "country": batch.country}
    )
    if ordered.status_code != 200:
        batch.failed.append(ordered.text)
        return
    order_id = str(ordered.json()["order_id"])
    deadline = time.monotonic() + batch.timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(batch.poll_interval)
        status = await call(http, "GET", "/status", params={"order_id": order_id})
        body = status.json()
        if body.get("status") == "STATUS_OK":
            batch.codes[order_id] = str(body["code"])
            batch.stored_at[order_id] = time.time()
            return
    cancelled = await call(http, "POST", "/set_status", data={"order_id": order_id, "status": 8})
    if cancelled.status_code == 200:
        batch.cancelled.append(order_id)
    else:
        batch.failed.append(cancelled.text)


async def run(base_url: str, api_key: str, batch: Batch) -> None:
    """Run every number of the batch at once over one connection pool."""
    headers = {"X-API-KEY": api_key}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        api = Api(http)
        await asyncio.gather(*(activate(api, batch) for _ in range(batch.count)))


# -- bench instrumentation -------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    """Read the settings file, run the batch, write what happened to the result file."""
    settings = json.loads(Path(argv[0]).read_text())
    batch = Batch(
        service=int(settings["service"]),
        country=int(settings["country"]),
        count=int(settings["count"]),
        poll_interval=float(settings["poll_interval"]),
        timeout=float(settings["timeout"]),
    )
    cpu_before, started_at = _cpu_seconds(), time.time()
    asyncio.run(run(settings["base_url"], os.environ["LEGITSMS_API_KEY"], batch))
    result = {
        "started_at": started_at,
        "finished_at": time.time(),
        "work_cpu_seconds": _cpu_seconds() - cpu_before,
        "codes": batch.codes,
        "stored_at": batch.stored_at,
        "cancelled": len(batch.cancelled),
        "failed": batch.failed,
    }
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
