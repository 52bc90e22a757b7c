"""Submit a job file: validate it, resolve its names, plan its slots, send their first nudges.

The ``submit`` and ``run`` commands and the scheduler all submit through here; how the client
is opened and how nudges travel (the Dramatiq broker) is theirs to say.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.db import store
from orchestrator.db.engine import transaction
from orchestrator.db.models import JobPlan, TargetPlan
from orchestrator.jobs.resolve import ResolvedJob, resolve_job
from orchestrator.jobs.spec import JobLimits, parse_job_spec, read_job_file
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.wiring import make_database
from orchestrator.money import to_micros
from orchestrator.provider.client import LegitSMSClient


def submit_job_file(
    settings: Settings,
    job_file: Path,
    *,
    open_client: Callable[[], LegitSMSClient],
    send: Callable[[list[Nudge]], None],
    allow_overlap: bool,
    before_commit: Callable[[], None] = lambda: None,
) -> tuple[int, int]:
    """Validate, resolve and plan the job, and nudge its slots; returns (job id, slots)."""
    limits = JobLimits.of(settings)
    # Read once, within max_job_file_bytes: what is validated is what is stored. A bad file
    # stops here, before any network call.
    source = read_job_file(job_file, limits.max_file_bytes)
    spec = parse_job_spec(source, str(job_file), limits)
    engine = make_database(settings)
    with open_client() as client:
        resolved = resolve_job(spec, client, str(job_file))
    before_commit()
    with transaction(engine) as session:
        job, slot_ids = store.submit_job(
            session, job_plan(resolved), source=source, allow_overlap=allow_overlap
        )
    send([Nudge(Action.PLACE, slot_id) for slot_id in slot_ids])
    assert job.id is not None
    return job.id, len(slot_ids)


def job_plan(job: ResolvedJob) -> JobPlan:
    """What the database plans of a resolved job file: plain values, money in micros."""
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
            )
            for target in job.targets
        ],
    )
