"""The poll policy: polls go where codes for that service and country tend to arrive."""

from __future__ import annotations

import pytest

from bench.poll_chart import poll_ages  # the ages the picture in bench/README shows
from orchestrator.lifecycle.polling import (
    MAX_POLLS,
    MIN_SAMPLES,
    MIN_WAIT,
    NO_MORE,
    POLL_SHARE,
    POLL_SHARE_ALONE,
    TAIL_LOOK,
    WALL_SLACK,
    ArrivalCache,
    ArrivalModel,
    budget_floor,
    next_poll,
    poll_share,
    poll_wait,
    polls_afforded,
)


def uniform(low: float, high: float, n: int = 100) -> ArrivalModel:
    return ArrivalModel(tuple(low + (high - low) * i / (n - 1) for i in range(n)))


def test_without_enough_history_orders_are_polled_at_the_configured_interval() -> None:
    few = ArrivalModel(tuple(float(i) for i in range(MIN_SAMPLES - 1)))
    assert next_poll(None, 0.0, interval=5.0) == 5.0
    assert next_poll(few, 3.0, interval=5.0) == 5.0


def test_no_poll_is_spent_before_the_fastest_code_ever_seen() -> None:
    model = uniform(20.0, 60.0)
    assert next_poll(model, 0.0, interval=5.0) >= 20.0


def test_polls_are_dense_where_codes_arrive_and_sparse_where_they_rarely_do() -> None:
    bursty = ArrivalModel(
        tuple([10.0 + i * 0.05 for i in range(90)] + [40.0 + i for i in range(10)])
    )
    inside_burst = next_poll(bursty, 11.0, interval=5.0)
    in_the_tail = next_poll(bursty, 41.0, interval=5.0)
    assert inside_burst < in_the_tail
    assert inside_burst >= MIN_WAIT


def test_an_order_gets_k_polls_each_reading_the_same_share_of_the_codes() -> None:
    model = uniform(5.0, 60.0)
    ages = poll_ages(model, 3)
    assert len(ages) == 3
    # Each poll reads a third of the codes: the share that arrived since the poll before.
    shares = [model.share_by(a) for a in ages]
    assert shares == pytest.approx([1 / 3, 2 / 3, 1.0], abs=0.02)
    assert ages[-1] == model.delays[-1]  # the last on the slowest code: every code is read


def test_polls_follow_the_hazard_close_together_where_codes_crowd() -> None:
    # Half the codes within a second at 10 s, the other half spread over 20-60 s.
    crowded = ArrivalModel(
        tuple([10.0 + i * 0.02 for i in range(50)] + [20.0 + i * 0.8 for i in range(51)])
    )
    ages = poll_ages(crowded, 2)
    assert ages[0] == pytest.approx(11.0, abs=0.1)  # by then half the codes have come
    assert ages[1] == crowded.delays[-1]


def test_a_tight_limit_leaves_one_poll_per_order_at_the_end_of_its_window() -> None:
    # The real limit: 0.48 requests/s for 30 orders waiting, a 55 s window, nothing to buy.
    model = uniform(5.0, 60.0)
    assert polls_afforded(30, 0.48 * POLL_SHARE_ALONE, model.window) == 1
    wait = poll_wait(model, 0.0, interval=5.0, waiting=30, rate=0.48)
    assert wait == pytest.approx(60.0)  # not the ~70 s budget floor of 30 orders
    assert budget_floor(30, 0.48 * POLL_SHARE_ALONE) > 65


def test_spare_budget_buys_more_polls_per_order_up_to_a_few() -> None:
    window = 55.0
    counts = [polls_afforded(n, 4.3, window) for n in (300, 100, 60, 20, 1)]
    assert counts == sorted(counts)  # fewer orders waiting: more polls each
    assert counts[0] == 1 and counts[-1] == MAX_POLLS
    assert polls_afforded(1, 0.0, window) == MAX_POLLS  # no limit of our own


def test_orders_without_a_model_or_past_the_window_keep_to_the_polls_share() -> None:
    model = uniform(5.0, 60.0)
    floor = budget_floor(100, 5.0 * POLL_SHARE_ALONE)
    assert floor == pytest.approx(100 / (5.0 * POLL_SHARE_ALONE))
    assert poll_wait(None, 0.0, interval=5.0, waiting=100, rate=5.0) == pytest.approx(floor)
    young = ArrivalModel(model.delays, seen_waiting=61.0)  # its tail not yet watched
    tail = poll_wait(young, 61.0, interval=5.0, waiting=100, rate=5.0)
    assert tail == pytest.approx(max(floor, 120.0 - 61.0))
    assert poll_wait(None, 0.0, interval=5.0, waiting=100, rate=0.0) == 5.0  # no limit
    assert budget_floor(100, 0.0) == 0.0


def stretch(batch: int, rate: float, give_up: float) -> float:
    """How much longer a batch's purchases take with polls at their share, one number after
    another, over the batch's time at the full rate."""
    at_full_rate = batch / rate
    with_polls = sum(
        1 / (rate * (1 - poll_share(left, rate, give_up, batch=batch)))
        for left in range(batch, 0, -1)
    )
    return (with_polls - at_full_rate) / (at_full_rate + give_up)


def test_while_buying_polls_stretch_the_batch_by_at_most_the_slack() -> None:
    # (b): 200 numbers at 4.8/s, given up after 120 s; (d): 40 at 0.48/s, after 300 s.
    for batch, rate, give_up in [(200, 4.8, 120.0), (40, 0.48, 300.0), (10_000, 4.8, 600.0)]:
        assert stretch(batch, rate, give_up) == pytest.approx(WALL_SLACK)
        # The same share for its last numbers as for its first: shares that grew as the
        # numbers left shrank added up to several times the slack.
        first = poll_share(batch, rate, give_up, batch=batch)
        assert poll_share(1, rate, give_up, batch=batch) == first
    # A large purchase leaves polls little; a small one up to POLL_SHARE, within the slack.
    assert poll_share(10_000, 4.8, 600.0, batch=10_000) < 0.1
    assert poll_share(200, 4.8, 120.0, batch=200) < 0.2
    assert poll_share(5, 4.8, 120.0, batch=5) == POLL_SHARE
    assert stretch(5, 4.8, 120.0) < WALL_SLACK


def test_once_nothing_is_left_to_buy_polls_take_all_but_the_cancels_share() -> None:
    assert poll_share(0, 4.8, 120.0) == POLL_SHARE_ALONE
    assert poll_share(1, 4.8, 120.0) <= POLL_SHARE < POLL_SHARE_ALONE
    # The same 100 orders waiting: polled far more often once every number is bought.
    buying = poll_wait(None, 0.0, interval=5.0, waiting=100, rate=5.0, to_buy=150, give_up=120)
    alone = poll_wait(None, 0.0, interval=5.0, waiting=100, rate=5.0, to_buy=0, give_up=120)
    assert alone < buying
    assert 100 / alone == pytest.approx(5.0 * POLL_SHARE_ALONE)


def test_a_poll_put_off_for_the_purchases_comes_back_when_they_should_be_done() -> None:
    # 150 numbers left at 5/s take 30 s at the full rate; the polls' small share would put
    # the next poll of each of 100 orders minutes away, past the purchases' end.
    share = poll_share(150, 5.0, 120.0)
    assert budget_floor(100, 5.0 * share) >= 100
    wait = poll_wait(None, 0.0, interval=5.0, waiting=100, rate=5.0, to_buy=150, give_up=120)
    assert wait == pytest.approx(150 / 5.0 / (1 - share))


def test_polls_put_off_for_the_purchases_come_back_oldest_order_first() -> None:
    # (d): 40 numbers at 0.48/s, 10 left to buy, 30 orders waiting without a model. Those put
    # off all fall due when the buying ends, and take a minute at the polls' share alone: the
    # order bought first (its code, if any, has waited longest) is polled first.
    buying = 10 / 0.48 / (1 - poll_share(10, 0.48, 300.0, batch=40))

    def wait(age: float) -> float:
        return poll_wait(
            None, age, interval=5.0, waiting=30, rate=0.48, to_buy=10, batch=40, give_up=300.0
        )

    oldest, younger, youngest = wait(60.0), wait(30.0), wait(1.0)
    assert buying <= oldest < younger < youngest  # none before the buying's end
    assert youngest - buying < 30 / (0.48 * POLL_SHARE_ALONE)  # within the drain


def test_a_short_rest_of_the_arrivals_is_read_by_one_poll_at_its_end() -> None:
    quick = uniform(0.2, 1.0)  # all of it within two of the shortest waits
    assert next_poll(quick, 0.0, interval=0.5) == pytest.approx(1.0)
    model = uniform(5.0, 60.0)
    assert next_poll(model, 59.5, interval=5.0) == pytest.approx(MIN_WAIT)
    assert next_poll(model, 59.2, interval=5.0) == pytest.approx(0.8)


def test_past_the_slowest_code_an_order_gets_one_more_look_then_waits_for_its_cancel() -> None:
    model = ArrivalModel(uniform(5.0, 60.0).delays, seen_waiting=300.0)  # a cancel at 300 s
    assert not model.censored
    assert next_poll(model, 60.0, interval=5.0) == pytest.approx(60.0)  # a look at 120 s
    assert next_poll(model, 80.0, interval=5.0) == pytest.approx(40.0)
    assert next_poll(model, 120.0, interval=5.0) >= NO_MORE  # the cancel reads a late code
    assert next_poll(model, 200.0, interval=5.0) >= NO_MORE


def test_a_model_of_the_first_codes_in_claims_no_tail_it_has_not_watched() -> None:
    # (c) --quick: codes after 20-40 s, every order bought at once and polled at 10, 20, 30 s.
    # At 30 s the codes in are those of 20-30 s (counted to ~25 s): the fastest, necessarily.
    first_in = uniform(20.0, 25.0, n=50)
    young = ArrivalModel(first_in.delays, seen_waiting=30.0)
    assert young.censored
    # The orders still waiting at 30 s, whose codes come at 30-40 s, are read at 40 s, not at
    # the one look at 2 x 25 s: the model has not seen the tail it would claim is empty.
    assert next_poll(young, 30.0, interval=10.0) == 10.0
    assert poll_wait(young, 30.0, interval=10.0, waiting=500, rate=0.0) == 10.0
    # Once an order has been watched to TAIL_LOOK x the slowest code, the one look holds.
    watched = ArrivalModel(first_in.delays, seen_waiting=TAIL_LOOK * 25.0)
    assert not watched.censored
    assert next_poll(watched, 30.0, interval=10.0) == pytest.approx(20.0)
    assert next_poll(watched, 50.0, interval=10.0) >= NO_MORE


def test_under_a_limit_a_censored_tail_gets_the_one_look_all_the_same() -> None:
    # (d), the real limit: polls until the give-up time would cost calls per number.
    young = ArrivalModel(uniform(5.0, 30.0).delays, seen_waiting=40.0)
    assert young.censored
    assert next_poll(young, 31.0, interval=5.0, limited=True) == pytest.approx(60.0 - 31.0)
    assert next_poll(young, 60.0, interval=5.0, limited=True) >= NO_MORE
    floor = budget_floor(2, 0.48 * POLL_SHARE_ALONE)  # 4.6 s: under the interval
    assert poll_wait(young, 31.0, interval=5.0, waiting=2, rate=0.48) == pytest.approx(29.0)
    assert poll_wait(young, 31.0, interval=5.0, waiting=2, rate=0.0) == 5.0  # no limit
    assert floor < 5.0


def test_under_a_limit_a_watched_tail_gets_no_look_the_cancel_reads_a_late_code() -> None:
    # (d): a look past the slowest code finds, mostly, an order that never gets one; at
    # 0.5 requests/s it costs two seconds of the key's time for each such order.
    watched = ArrivalModel(uniform(5.0, 60.0).delays, seen_waiting=300.0)
    assert not watched.censored
    assert next_poll(watched, 60.0, interval=5.0, limited=True) >= NO_MORE
    assert poll_wait(watched, 60.0, interval=5.0, waiting=10, rate=0.48) >= NO_MORE
    # Without a limit of our own the one look stays (test above): it costs no wall time.
    assert next_poll(watched, 60.0, interval=5.0) == pytest.approx(60.0)


def test_the_cache_learns_from_history_and_ignores_impossible_delays() -> None:
    calls: list[tuple[int, int]] = []

    def load(service: int, country: int) -> tuple[list[float], float]:
        calls.append((service, country))
        return [-1.0, 3.0, 1.0, 2.0], 4.5

    cache = ArrivalCache(load)
    model = cache.model(1003, 16)
    assert model == ArrivalModel((1.0, 2.0, 3.0), seen_waiting=4.5)
    assert model is not None and model.censored  # 4.5 s < TAIL_LOOK x 3 s
    assert cache.model(1003, 16) is model
    assert calls == [(1003, 16)]
