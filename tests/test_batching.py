"""Packing nudges into messages: every nudge carried, never early, only a little late."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.lifecycle.nudges import BATCH_SIZE, SPREAD, Action, Nudge, pack

nudges = st.lists(
    st.builds(
        Nudge,
        st.sampled_from(list(Action)),
        st.integers(1, 40),
        st.floats(0, 120, allow_nan=False),
    ),
    max_size=120,
)


@given(nudges)
def test_every_nudge_travels_no_earlier_than_due_and_at_most_the_spread_later(
    sent: list[Nudge],
) -> None:
    batches = pack(sent)

    for nudge in sent:
        carriers = [
            b
            for b in batches
            if b.action is nudge.action and nudge.activation_id in b.activation_ids
        ]
        assert any(nudge.delay <= b.delay <= nudge.delay + SPREAD for b in carriers), nudge
    for batch in batches:
        assert 0 < len(batch.activation_ids) <= BATCH_SIZE[batch.action]
        assert len(set(batch.activation_ids)) == len(batch.activation_ids)
        wanted = [n for n in sent if n.action is batch.action and n.delay <= batch.delay]
        assert set(batch.activation_ids) <= {n.activation_id for n in wanted}


def test_a_submitted_job_goes_out_in_full_messages() -> None:
    batches = pack([Nudge(Action.PLACE, slot) for slot in range(1, 2001)])

    assert len(batches) == 2000 // BATCH_SIZE[Action.PLACE]
    assert [i for b in batches for i in b.activation_ids] == list(range(1, 2001))
    assert {b.delay for b in batches} == {0.0}


def test_nudges_due_far_apart_travel_apart() -> None:
    batches = pack([Nudge(Action.CHECK, 1, 1.0), Nudge(Action.CHECK, 2, 5.0)])

    assert [(b.activation_ids, b.delay) for b in batches] == [((1,), 1.0), ((2,), 5.0)]
