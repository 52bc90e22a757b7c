"""The polls' share of the limit while numbers are bought: purchases keep the rest."""

from __future__ import annotations

import time
import uuid

import pytest
from redis import Redis

from orchestrator.errors import Throttled
from orchestrator.provider.ratelimit import ShareGate, key_fingerprint


def gate(redis_url: str) -> ShareGate:
    client = Redis.from_url(redis_url)
    return ShareGate(client, key_id=key_fingerprint(f"test-{uuid.uuid4()}"), name="polls")


def test_a_share_admits_calls_no_faster_than_its_rate(redis_url: str) -> None:
    polls = gate(redis_url)
    polls.admit(2.0)  # one slot every 0.5 s
    with pytest.raises(Throttled) as refused:
        polls.admit(2.0)
    assert 0.3 < refused.value.retry_after <= 0.5
    time.sleep(refused.value.retry_after + 0.02)
    polls.admit(2.0)


def test_a_refused_call_books_nothing_and_a_larger_share_frees_the_next_slot_sooner(
    redis_url: str,
) -> None:
    polls = gate(redis_url)
    polls.admit(0.5)  # the next slot 2 s away at this share
    for _ in range(3):
        with pytest.raises(Throttled):
            polls.admit(0.5)
    time.sleep(2.05)
    polls.admit(50.0)  # the refusals booked nothing: the slot is due now
    time.sleep(0.03)
    polls.admit(50.0)  # and at the larger share the one after comes 20 ms later


def test_no_rate_means_no_gate(redis_url: str) -> None:
    polls = gate(redis_url)
    for _ in range(5):
        polls.admit(0.0)
