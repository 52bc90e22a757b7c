"""``status --json``: the documents (README: Commands) beside status_view's tables.

The recent jobs, or one job with its targets; and the circuit breakers open now. Every state
is a key of ``states`` (0 when no slot is in it), so a script reads each without guessing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.cli.output import json_money, json_time
from orchestrator.cli.status_view import BOUGHT, RECENT_JOBS, wallet_pause
from orchestrator.config import Settings
from orchestrator.db import queries
from orchestrator.db.models import FINAL_STATES, Job, State, Target, utcnow
from orchestrator.lifecycle.breaker import open_breakers
from orchestrator.money import from_micros

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session


def _money(micros: int | None) -> str | None:
    return json_money(None if micros is None else from_micros(micros))


def _states(counts: dict[State, int]) -> dict[str, int]:
    return {state.value: counts.get(state, 0) for state in State}


def _job(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status.value,
        "created_at": json_time(job.created_at),
        "cancel_requested_at": json_time(job.cancel_requested_at),
        "finished_at": json_time(job.finished_at),
    }


def jobs_document(session: Session, settings: Settings) -> dict[str, Any]:
    """``status --json``: the newest jobs, newest first, and the open breakers."""
    jobs = []
    for job, count, received in queries.recent_jobs(session, RECENT_JOBS):
        assert job.id is not None
        jobs.append(
            {
                **_job(job),
                "numbers": count,
                "received": received,
                "spent": _money(queries.spend_micros(session, job.id)),
                "budget": _money(job.budget_micros),
            }
        )
    return {"jobs": jobs, "breakers": breakers(session, settings)}


def job_document(session: Session, settings: Settings, job: Job) -> dict[str, Any]:
    """``status JOB --json``: the job, its targets, and the open breakers."""
    assert job.id is not None
    counts = queries.state_counts(session, job.id)
    settled = counts[State.RECEIVED] + counts[State.CANCELLED] + counts[State.EXPIRED]
    pause = wallet_pause(session, job)
    summary = {
        **_job(job),
        "numbers": sum(counts.values()),
        "ended": sum(n for state, n in counts.items() if state in FINAL_STATES),
        "states": _states(counts),
        "success_rate": round(counts[State.RECEIVED] / settled, 4) if settled else None,
        "spent": _money(queries.spend_micros(session, job.id)),
        "budget": _money(job.budget_micros),
        "reserved": _money(job.reserved_micros),
        "buying_paused": (
            None if pause is None else {"reason": pause[0], "until": json_time(pause[1])}
        ),
    }
    return {
        "job": summary,
        "targets": _targets(session, job.id),
        "breakers": breakers(session, settings),
    }


def _targets(session: Session, job_id: int) -> list[dict[str, Any]]:
    per_target: dict[int, tuple[Target, dict[State, int]]] = {}
    for target, state, count in queries.target_state_counts(session, job_id):
        assert target.id is not None
        per_target.setdefault(target.id, (target, {}))[1][State(state)] = int(count)
    spent = queries.spend_micros_by_target(session, job_id)
    found = []
    for target_id, (target, counts) in per_target.items():
        received = counts.get(State.RECEIVED, 0)
        cost = spent.get(target_id, 0)
        found.append(
            {
                "target": target.position,
                "service": {"id": target.service_id, "name": target.service_name},
                "kind": "codes" if target.codes_wanted is not None else "quantity",
                "wanted": target.codes_wanted or target.quantity,
                "received": received,
                "bought": sum(counts.get(state, 0) for state in BOUGHT),
                "states": _states(counts),
                "max_price": _money(target.max_price_micros),
                "spent": _money(cost),
                "per_code": _money(cost // received) if received else None,
            }
        )
    return found


def breakers(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """The circuit breakers open now (breaker.py), as ``status`` lists them."""
    found = open_breakers(session, settings, utcnow())
    return [
        {
            "service": {"id": b.service_id, "name": b.service_name},
            "country": {"id": b.country_id, "name": b.country_name},
            "until": json_time(b.until),
            "failures": b.failures,
        }
        for _, b in sorted(found.items())
    ]
