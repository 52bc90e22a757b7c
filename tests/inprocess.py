"""The lifecycle in one process: the real simulator behind httpx.MockTransport and a fake clock.

For tests that must control time and message delivery exactly; everything from the client
down to the database is real, only sockets and the broker are replaced.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from orchestrator.config import Settings
from orchestrator.db import store
from orchestrator.db.engine import create_tables, make_engine, transaction
from orchestrator.db.models import Job, JobStatus
from orchestrator.errors import Throttled
from orchestrator.jobs.resolve import ResolvedJob, ResolvedTarget
from orchestrator.jobs.submit import job_plan
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.purchase import place
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.settle import cancel, check
from orchestrator.lifecycle.sweep import sweep
from orchestrator.provider.client import LegitSMSClient, Throttle
from orchestrator.provider.ratelimit import Priority, horizon
from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.simulator import Simulator

BASE_URL = "http://sandbox.test/wp-json/legitsms/v2"


class FakeClock:
    """Time that moves only when told to; shared by the runtime and the simulator."""

    def __init__(self) -> None:
        # Ahead of the real clock by more than a loaded machine takes to plan a job: rows
        # planned "now" (by the real clock, as store.create_job does) are due at once.
        self.now = datetime.now(UTC) + timedelta(seconds=10)

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def simulator_transport(simulator: Simulator) -> httpx.MockTransport:
    """Answer requests with the simulator's replies, as its HTTP server would."""

    def handle(request: httpx.Request) -> httpx.Response:
        headers = Message()
        for name, value in request.headers.items():
            headers[name] = value
        target = request.url.raw_path.decode()
        reply = simulator.handle(request.method, target, request.content, headers)
        if reply.drop:
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        out = {"content-type": reply.content_type}
        if reply.retry_after is not None:
            out["retry-after"] = str(reply.retry_after)
        return httpx.Response(reply.status, content=reply.body, headers=out)

    return httpx.MockTransport(handle)


def settings(**overrides: Any) -> Settings:
    """Settings for in-process runs; explicit values only (the environment is cleared by tests)."""
    values: dict[str, Any] = {
        "api_key": DEMO_API_KEY,
        "base_url": BASE_URL,
        "rate_limit": 0,
        "poll_interval": 2,
        "cancel_min_age": 5,
        "provider_expiry": 60,
        "expiry_margin": 10,
        "sweep_interval": 4,
        "price_cache_ttl": 0,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def inprocess_runtime(
    folder: Path,
    config: SandboxConfig,
    *,
    throttle: Throttle | None = None,
    clock: FakeClock | None = None,
    **overrides: Any,
) -> Iterator[tuple[Runtime, Simulator, FakeClock]]:
    """A Runtime on an SQLite file in ``folder`` whose provider is an in-memory simulator.

    ``throttle`` (a real shared limiter, or a FakeLimit on ``clock``) paces the client's
    calls; none by default.
    """
    clock = clock or FakeClock()
    simulator = Simulator(config, clock=clock.epoch)
    engine = make_engine(f"sqlite:///{folder / 'inprocess.db'}")
    create_tables(engine)
    client = LegitSMSClient(
        BASE_URL, DEMO_API_KEY, transport=simulator_transport(simulator), throttle=throttle
    )
    rt = Runtime(
        settings=settings(**overrides), engine=engine, client=client, throttle=throttle, clock=clock
    )
    try:
        yield rt, simulator, clock
    finally:
        client.close()
        engine.dispose()


def telegram_job(
    *,
    quantity: int,
    budget: Decimal | None = None,
    cap: Decimal = Decimal("2.00"),
    name: str = "prop",
    code_timeout: float = 10.0,
) -> ResolvedJob:
    """A resolved job of ``quantity`` Telegram numbers in the UK."""
    return ResolvedJob(
        name=name,
        budget=budget,
        code_timeout=code_timeout,
        schedule=None,
        targets=[
            ResolvedTarget(
                index=0,
                service_id=1003,
                service_name="Telegram",
                countries=[(16, "United Kingdom")],
                quantity=quantity,
                max_price=cap,
            )
        ],
    )


def plan_job(
    engine: Engine,
    *,
    quantity: int,
    budget: Decimal | None = None,
    cap: Decimal = Decimal("2.00"),
    name: str = "prop",
    code_timeout: float = 10.0,
) -> list[int]:
    """Plan a Telegram/UK job of ``quantity`` numbers; returns the slot ids."""
    job = telegram_job(
        quantity=quantity, budget=budget, cap=cap, name=name, code_timeout=code_timeout
    )
    with transaction(engine) as session:
        _, ids = store.create_job(session, job_plan(job), source="inline")
    return ids


class FakeLimit:
    """The shared limiter's rule on the fake clock: one slot per interval, booked ahead only
    within the caller's priority horizon; a granted caller "sleeps" (the clock moves) to it."""

    def __init__(self, clock: FakeClock, rate: float, *, max_wait: float = 1.0) -> None:
        self.clock = clock
        self.interval = 1 / rate
        self.max_wait = max_wait
        self.tat = 0.0

    def acquire(self, priority: Priority) -> None:
        now = self.clock.epoch()
        slot = max(now, self.tat)
        ahead = horizon(priority, interval=self.interval, max_wait=self.max_wait)
        if slot - now > ahead:
            raise Throttled(slot - ahead - now)
        self.tat = slot + self.interval
        self.clock.advance(slot - now)

    def pause(self, seconds: float) -> None:
        self.tat = max(self.tat, self.clock.epoch() + seconds)


STEPS = {Action.PLACE: place, Action.CHECK: check, Action.CANCEL: cancel}
Extra = tuple[int, Action, int]  # at the k-th delivery, also deliver (action, slot id) now


def run_broker(
    rt: Runtime,
    clock: FakeClock,
    nudges: Sequence[Nudge],
    *,
    horizon: float,
    extras: Collection[Extra] = (),
    losses: Collection[int] = (),
) -> None:
    """Deliver nudges in due order, with the given duplicates and losses, plus periodic sweeps,
    until no job is active or ``horizon`` fake seconds have passed."""
    counter = itertools.count()
    queue: list[tuple[float, int, Nudge]] = []
    start = rt.now().timestamp()

    def push(sent: Sequence[Nudge]) -> None:
        for nudge in sent:
            heapq.heappush(queue, (rt.now().timestamp() + nudge.delay, next(counter), nudge))

    push(nudges)
    delivered = 0
    next_sweep = start + rt.settings.sweep_interval
    while rt.now().timestamp() - start < horizon:
        due = queue[0][0] if queue else next_sweep
        if next_sweep <= due:
            clock.advance(max(0.0, next_sweep - rt.now().timestamp()))
            push(sweep(rt))
            next_sweep += rt.settings.sweep_interval
            if not _active_jobs(rt):
                return
            continue
        when, _, nudge = heapq.heappop(queue)
        clock.advance(max(0.0, when - rt.now().timestamp()))
        for k, action, slot_id in extras:
            if k == delivered:
                push(STEPS[action](rt, slot_id))
        if delivered not in losses:
            push(STEPS[nudge.action](rt, nudge.activation_id))
        delivered += 1


def _active_jobs(rt: Runtime) -> int:
    with Session(rt.engine) as session:
        query = select(Job).where(col(Job.status) == JobStatus.ACTIVE)
        return len(session.exec(query).all())
