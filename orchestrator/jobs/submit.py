"""Submit a job file: validate it, resolve its names, plan its slots, send their first nudges.

The ``submit`` and ``run`` commands and the scheduler all submit through here; how the client
is opened and how nudges travel (the Dramatiq broker) is theirs to say.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from orchestrator.config import Settings
from orchestrator.db import store
from orchestrator.db.engine import transaction
from orchestrator.db.models import JobPlan, TargetPlan, utcnow
from orchestrator.jobs.budget_fit import budget_warning
from orchestrator.jobs.resolve import ResolvedJob, resolve_job
from orchestrator.jobs.spec import JobLimits, parse_job_spec, read_job_file
from orchestrator.lifecycle.estimate import numbers_in_flight, read_outcomes
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.planner import rank_countries
from orchestrator.lifecycle.wiring import make_database
from orchestrator.money import to_micros
from orchestrator.provider.client import LegitSMSClient
from orchestrator.provider.shared_prices import SharedCatalog, SharedPrices

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

log = structlog.get_logger(__name__)


def submit_job_file(
    settings: Settings,
    job_file: Path,
    *,
    open_client: Callable[[], LegitSMSClient],
    send: Callable[[list[Nudge]], None],
    allow_overlap: bool,
    before_commit: Callable[[], None] = lambda: None,
    shared_prices: SharedPrices | None = None,
) -> tuple[int, int]:
    """Validate, resolve and plan the job, and nudge its slots; returns (job id, slots).

    ``shared_prices``: the prices read to resolve the job are shared with the workers
    (provider/shared_prices.py), and shared ones are used.
    """
    limits = JobLimits.of(settings)
    # Read once, within max_job_file_bytes: what is validated is what is stored. A bad file
    # stops here, before any network call.
    source = read_job_file(job_file, limits.max_file_bytes)
    spec = parse_job_spec(source, str(job_file), limits)
    if (short := budget_warning(spec)) is not None:
        log.warning("budget_short", job=spec.name, file=str(job_file), message=short)
    engine = make_database(settings)
    with open_client() as client:
        catalog = client if shared_prices is None else SharedCatalog(client, shared_prices)
        resolved = resolve_job(spec, catalog, str(job_file))
    # Submitted before the wallet checkpoint before_commit() may take: a job created after the
    # last checkpoint has the workers read the balance again ("job_started"), a call for nothing.
    submitted_at = utcnow()
    before_commit()
    with transaction(engine) as session:
        plan = replace(
            job_plan(resolved, first_numbers(session, resolved)), submitted_at=submitted_at
        )
        job, slot_ids = store.submit_job(session, plan, source=source, allow_overlap=allow_overlap)
    send([Nudge(Action.PLACE, slot_id) for slot_id in slot_ids])
    assert job.id is not None
    return job.id, len(slot_ids)


def first_numbers(session: Session, job: ResolvedJob) -> dict[int, int]:
    """How many numbers each codes target buys at once, by target index: enough to expect its
    codes from the country the planner would choose (targets.py keeps it so after)."""
    first: dict[int, int] = {}
    for target in job.targets:
        if target.codes is None:
            continue
        outcomes = read_outcomes(session, target.service_id, utcnow())
        ranked, _ = rank_countries(target.countries, target.prices, target.max_price, outcomes)
        rate = ranked[0].rate if ranked else 1.0
        first[target.index] = min(target.quantity, numbers_in_flight(target.codes, rate))
    return first


def job_plan(job: ResolvedJob, first: Mapping[int, int] | None = None) -> JobPlan:
    """What the database plans of a resolved job file: plain values, money in micros;
    ``first``: the numbers a codes target buys at once, by target index (default: its codes)."""
    return JobPlan(
        name=job.name,
        budget_micros=to_micros(job.budget) if job.budget is not None else None,
        code_timeout=job.code_timeout,
        targets=[
            TargetPlan(
                position=target.index,
                service_id=target.service_id,
                service_name=target.service_name,
                countries=list(target.countries),
                quantity=target.quantity,
                max_price_micros=to_micros(target.max_price),
                codes_wanted=target.codes,
                first_slots_planned=(
                    None if target.codes is None else (first or {}).get(target.index, target.codes)
                ),
            )
            for target in job.targets
        ],
    )
