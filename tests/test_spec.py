"""Job files: what load_job_spec accepts and refuses, and how resolve_job maps names to ids."""

from __future__ import annotations

import math
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.durations import format_duration, parse_duration
from orchestrator.errors import SpecError
from orchestrator.jobs.resolve import resolve_job
from orchestrator.jobs.spec import (
    JobSpec,
    load_job_spec,
    parse_job_spec,
    parse_money,
)
from orchestrator.provider.types import Price, Service

EXAMPLE = Path(__file__).resolve().parent.parent / "jobs" / "example.yaml"

GOOD_TARGET = """\
  - service: Whatsapp
    country: 16
    quantity: 5
    max_price: 1.50
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(path: Path | str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        load_job_spec(path)
    return caught.value


def assert_names(error: SpecError, path: Path | str, field: str, *words: str) -> None:
    """The error names the file, the field and the problem, in its attributes and its text."""
    assert error.path == str(path)
    assert error.field == field
    message = str(error)
    assert message.startswith(f"{path}: {field}: " if field else f"{path}: ")
    for word in words:
        assert word in error.problem


def job_with_target(tmp_path: Path, target: str) -> Path:
    """A job whose only target is ``target`` (YAML lines for one list item)."""
    return write(tmp_path, "name: t\ntargets:\n" + textwrap.indent(textwrap.dedent(target), "  "))


# Reading the file


def test_a_missing_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert_names(refused(path), path, "", "no such file")


def test_a_directory_is_refused_as_not_a_job_file(tmp_path: Path) -> None:
    assert_names(refused(tmp_path), tmp_path, "", "is a directory")


def test_an_unreadable_file_is_refused_with_the_systems_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "name: t\n")

    # Permission bits do not stop root, so the refusal is staged at the edge.
    def deny(self: Path, *args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", deny)
    assert_names(refused(path), path, "", "cannot be read", "Permission denied")


def test_a_file_that_is_not_utf8_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    assert_names(refused(path), path, "", "not UTF-8")


def test_bad_yaml_is_refused_saying_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ntargets:\n  - service: [Whatsapp\n    quantity: 1\n")
    error = refused(path)
    assert_names(error, path, "", "not valid YAML", "line ")
    assert error.problem.endswith("(line 4, column 13)")


def test_an_unquoted_cron_schedule_is_refused_with_a_hint_to_quote_it(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nschedule: */5 * * * *\ntargets:\n" + GOOD_TARGET)
    assert_names(refused(path), path, "", "(line 2, column 12); quote values that start with *")


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: t
        targets:
          - service: Whatsapp
            country: 16
            quantity: 5
            quantity: 50
            max_price: 1.50
        """,
    )
    assert_names(refused(path), path, "targets[0].quantity", "appears twice", "lines 5 and 6")


def test_a_key_given_twice_on_one_line_is_refused(tmp_path: Path) -> None:
    path = job_with_target(tmp_path, "- {service: Whatsapp, country: 16, country: 1}\n")
    assert_names(refused(path), path, "targets[0].country", "appears twice (line 3)")


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing yet\n")
    assert_names(refused(path), path, "", "is empty")


def test_a_top_level_list_is_refused_as_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- name: t\n")
    assert_names(refused(path), path, "", "must be a mapping", "got a list")


# The top-level keys


def test_an_unknown_top_level_key_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nbugdet: 5\ntargets:\n" + GOOD_TARGET)
    assert_names(refused(path), path, "bugdet", "not a known key", "'budget'", "line 2")


def test_a_missing_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "targets:\n" + GOOD_TARGET)
    assert_names(refused(path), path, "name", "is required")


@pytest.mark.parametrize("name", ["my job", "../etc", ".hidden", "-rf", "'123'.5", "a" * 65])
def test_a_name_unfit_for_file_names_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'name: "{name}"\ntargets:\n' + GOOD_TARGET)
    assert_names(refused(path), path, "name", "letters, digits", "file names")


def test_a_name_that_is_not_text_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: [a, b]\ntargets:\n" + GOOD_TARGET)
    assert_names(refused(path), path, "name", "got a list")


@pytest.mark.parametrize(
    ("budget", "problem"),
    [
        ("-5", "more than 0, got -5"),
        ("0", "more than 0, got 0"),
        ("lots", "amount of money like 1.50, got 'lots'"),
        ("yes", "got true (a boolean"),
        (".nan", "finite"),
        ("20.00001", "at most 4 decimal places"),
    ],
)
def test_a_budget_that_is_not_money_is_refused(tmp_path: Path, budget: str, problem: str) -> None:
    path = write(tmp_path, f"name: t\nbudget: {budget}\ntargets:\n" + GOOD_TARGET)
    assert_names(refused(path), path, "budget", problem, "(line 2)")


@pytest.mark.parametrize(
    ("timeout", "problem"),
    [
        ("10 minutes", "must be a duration"),
        ("1m30", "must be a duration"),
        ("-5s", "must be a duration"),
        ("1d", "must be a duration"),
        ("yes", "a boolean"),
        ("0s", "longer than 0"),
        ("0", "longer than 0"),
    ],
)
def test_a_code_timeout_that_does_not_parse_is_refused(
    tmp_path: Path, timeout: str, problem: str
) -> None:
    path = write(tmp_path, f"name: t\ncode_timeout: {timeout}\ntargets:\n" + GOOD_TARGET)
    assert_names(refused(path), path, "code_timeout", problem)


@pytest.mark.parametrize("schedule", ["every night", "61 3 * * *", "0 3 * * * 0", "''"])
def test_a_schedule_that_is_not_five_field_cron_is_refused(tmp_path: Path, schedule: str) -> None:
    path = write(tmp_path, f"name: t\nschedule: {schedule}\ntargets:\n" + GOOD_TARGET)
    assert_names(refused(path), path, "schedule", "cron expression")


def test_missing_targets_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\n")
    assert_names(refused(path), path, "targets", "is required")


def test_an_empty_target_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ntargets: []\n")
    assert_names(refused(path), path, "targets", "must not be empty")


def test_targets_that_are_not_a_list_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ntargets:\n  service: Whatsapp\n")
    assert_names(refused(path), path, "targets", "must be a list", "got a mapping")


# Inside a target


def test_a_target_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\ntargets:\n  - Whatsapp\n")
    assert_names(refused(path), path, "targets[0]", "must be a mapping", "'Whatsapp'")


def test_an_unknown_target_key_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = job_with_target(
        tmp_path, "- service: Whatsapp\n  contry: 16\n  quantity: 1\n  max_price: 1\n"
    )
    error = refused(path)
    assert error.field == "targets[0].contry"
    assert "not a known key; did you mean 'country'?" in error.problem


def test_a_zero_quantity_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = job_with_target(
        tmp_path, "- service: Whatsapp\n  country: 16\n  quantity: 0\n  max_price: 1\n"
    )
    assert_names(refused(path), path, "targets[0].quantity", "at least 1", "got 0", "line 5")


def test_a_negative_quantity_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = job_with_target(
        tmp_path, "- service: Whatsapp\n  country: 16\n  quantity: -3\n  max_price: 1\n"
    )
    assert_names(refused(path), path, "targets[0].quantity", "at least 1", "got -3")


@pytest.mark.parametrize(
    ("quantity", "shown"), [("2.5", "2.5"), ("5.0", "5.0"), ("true", "boolean"), ("'5'", "'5'")]
)
def test_a_quantity_that_is_not_a_whole_number_is_refused(
    tmp_path: Path, quantity: str, shown: str
) -> None:
    path = job_with_target(
        tmp_path, f"- service: Whatsapp\n  country: 16\n  quantity: {quantity}\n  max_price: 1\n"
    )
    assert_names(refused(path), path, "targets[0].quantity", "whole number", shown)


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        ("-1.50", "more than 0"),
        ("0", "more than 0"),
        ("0.00", "more than 0"),
        ("cheap", "amount of money"),
        ("'$1.50'", "amount of money"),
        ("true", "boolean"),
        (".nan", "finite"),
        (".inf", "finite"),
        ("1.23456", "at most 4 decimal places"),
        ("[1]", "got a list"),
        ("", "got nothing"),
    ],
)
def test_a_max_price_that_is_not_money_is_refused(tmp_path: Path, price: str, problem: str) -> None:
    path = job_with_target(
        tmp_path, f"- service: Whatsapp\n  country: 16\n  quantity: 1\n  max_price: {price}\n"
    )
    assert_names(refused(path), path, "targets[0].max_price", problem)


def test_a_target_with_both_country_and_countries_is_refused(tmp_path: Path) -> None:
    path = job_with_target(
        tmp_path,
        "- service: Whatsapp\n  country: 16\n  countries: [1]\n  quantity: 1\n  max_price: 1\n",
    )
    assert_names(refused(path), path, "targets[0]", "both country and countries")


def test_a_target_with_neither_country_nor_countries_is_refused(tmp_path: Path) -> None:
    path = job_with_target(tmp_path, "- service: Whatsapp\n  quantity: 1\n  max_price: 1\n")
    assert_names(refused(path), path, "targets[0]", "needs a country")


def test_an_empty_countries_list_is_refused(tmp_path: Path) -> None:
    path = job_with_target(
        tmp_path, "- service: Whatsapp\n  countries: []\n  quantity: 1\n  max_price: 1\n"
    )
    assert_names(refused(path), path, "targets[0].countries", "must not be empty")


def test_a_country_yaml_reads_as_a_boolean_is_refused_with_a_hint_to_quote_it(
    tmp_path: Path,
) -> None:
    # Norway's code NO is YAML 1.1 for false.
    path = job_with_target(
        tmp_path, "- service: Whatsapp\n  countries: [16, NO]\n  quantity: 1\n  max_price: 1\n"
    )
    assert_names(refused(path), path, "targets[0].countries[1]", "boolean", "quote it")


def test_a_missing_service_is_refused(tmp_path: Path) -> None:
    path = job_with_target(tmp_path, "- country: 16\n  quantity: 1\n  max_price: 1\n")
    assert_names(refused(path), path, "targets[0].service", "is required")


def test_several_problems_are_reported_together_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: t
        targets:
          - service: Whatsapp
            country: 16
            quantity: 0
            max_price: 1.50
          - service: Whatsapp
            country: 16
            quantity: 1
            max_price: free
        colour: blue
        """,
    )
    error = refused(path)
    assert error.field == "targets[0].quantity"
    lines = error.problem.splitlines()
    assert lines[0] == "must be a whole number of at least 1, got 0 (line 5)"
    assert (
        lines[1]
        == "  targets[1].max_price: must be an amount of money like 1.50, got 'free' (line 10)"
    )
    assert lines[2].startswith("  colour: is not a known key")
    assert len(lines) == 3


# What a good file gives


def test_the_example_job_loads_with_exact_money_and_seconds() -> None:
    spec = load_job_spec(EXAMPLE)
    assert spec.name == "example"
    assert spec.budget == Decimal("20.00")
    assert spec.code_timeout == 20.0
    assert [t.country_refs for t in spec.targets] == [[16], ["United States", 16]]
    assert [t.max_price for t in spec.targets] == [Decimal("2.50"), Decimal("2.00")]
    assert [(t.quantity, t.codes, t.numbers_at_most) for t in spec.targets] == [
        (4, None, 4),
        (None, 3, 9),
    ]


def test_a_minimal_job_gets_the_defaults(tmp_path: Path) -> None:
    spec = load_job_spec(write(tmp_path, "name: t\ntargets:\n" + GOOD_TARGET))
    assert spec.budget is None
    assert spec.code_timeout == 600.0
    assert spec.schedule is None


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("45s", 45), ("10m", 600), ("1h30m", 5400), ("2h", 7200), ("1.5m", 90), ("90", 90)],
)
def test_code_timeout_reads_durations(tmp_path: Path, written: str, seconds: float) -> None:
    path = write(tmp_path, f"name: t\ncode_timeout: {written}\ntargets:\n" + GOOD_TARGET)
    assert load_job_spec(path).code_timeout == seconds


@pytest.mark.parametrize(
    ("written", "amount"),
    [("1.1", "1.1"), ("'2.50'", "2.50"), ("3", "3"), ("0.0001", "0.0001"), ("'1.2340'", "1.2340")],
)
def test_money_is_kept_exactly_as_written(tmp_path: Path, written: str, amount: str) -> None:
    path = job_with_target(
        tmp_path, f"- service: Whatsapp\n  country: 16\n  quantity: 1\n  max_price: {written}\n"
    )
    assert str(load_job_spec(path).targets[0].max_price) == amount


def test_a_valid_schedule_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, 'name: t\nschedule: "0  3 * * 1-5"\ntargets:\n' + GOOD_TARGET)
    assert load_job_spec(path).schedule == "0 3 * * 1-5"


def test_ids_may_be_written_as_numbers_or_as_text(tmp_path: Path) -> None:
    path = job_with_target(
        tmp_path,
        "- service: '1012'\n  countries: [' 16 ', 1, United States]\n  quantity: 1\n"
        "  max_price: 1\n",
    )
    target = load_job_spec(path).targets[0]
    assert target.service == 1012
    assert target.country_refs == [16, 1, "United States"]


# parse_money on its own (config and the CLI reuse it)


def test_parse_money_keeps_a_float_exact() -> None:
    assert parse_money(1.1) == Decimal("1.1")
    assert parse_money(0.1) + parse_money(0.2) == Decimal("0.3")


def test_parse_money_prints_exponent_and_padded_forms_plainly() -> None:
    assert str(parse_money("1e2")) == "100"
    assert str(parse_money("1.500000")) == "1.5000"


@pytest.mark.parametrize("value", [True, None, -1, 0, "", "1,50", "NaN", "-inf", 1e-05, 0.1 + 0.2])
def test_parse_money_refuses_what_is_not_a_positive_amount(value: object) -> None:
    with pytest.raises(ValueError, match=r"money|more than 0|decimal places"):
        parse_money(value)


# Durations on their own (config reuses them)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("45s", 45.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("2h", 7200.0),
        ("1.5m", 90.0),
        ("1h0m30s", 3630.0),
        (" 5m ", 300.0),
        ("90", 90.0),
        ("2.5", 2.5),
        (90, 90.0),
        (0.5, 0.5),
        (0, 0.0),
    ],
)
def test_parse_duration_reads_units_and_plain_seconds(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "m", "10 m", "1m1h", "1d", "-5s", "5S", "ten", True, -1, math.nan, math.inf]
)
def test_parse_duration_refuses_anything_else_saying_what_it_expected(value: str | float) -> None:
    with pytest.raises(ValueError, match="must be a duration like 45s"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(45, "45s"), (600, "10m"), (5400, "1h30m"), (7200, "2h"), (3601, "1h1s"), (0, "0s")],
)
def test_format_duration_writes_the_shortest_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_duration_keeps_milliseconds_and_signs() -> None:
    assert format_duration(90.5) == "1m30.5s"
    assert format_duration(0.25) == "0.25s"
    assert format_duration(-75) == "-1m15s"


@given(st.integers(min_value=0, max_value=10**10))
def test_format_duration_is_read_back_by_parse_duration(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == pytest.approx(millis / 1000)


# Resolving names against the provider's lists

SERVICES = [
    Service(1012, "Whatsapp"),
    Service(924, "Tiktok/Douyin"),
    Service(1100, "Telegram"),
    Service(1200, "Google"),
]


def price(country_id: int, country: str, cost: str = "1.00") -> Price:
    return Price(country_id=country_id, country=country, cost=Decimal(cost), count=100, rate=60)


PRICES = {
    1012: [price(1, "United States"), price(16, "United Kingdom"), price(48, "Netherlands")],
    924: [price(1, "United States")],
    1100: [price(1, "United States"), price(16, "United Kingdom")],
    1200: [price(16, "United Kingdom")],
}


class FakeCatalog:
    """The two read-only provider calls, from fixed lists, counting the price look-ups."""

    def __init__(self, services: list[Service] = SERVICES) -> None:
        self.service_list = services
        self.prices_asked: list[int] = []

    def services(self) -> list[Service]:
        return self.service_list

    def prices(self, service_id: int) -> dict[int, Price]:
        self.prices_asked.append(service_id)
        return {p.country_id: p for p in PRICES.get(service_id, [])}


def spec_of(*targets: dict[str, object], **top: object) -> JobSpec:
    data = {"name": "t", **top, "targets": list(targets)}
    return parse_job_spec(yaml.safe_dump(data, sort_keys=False), "job.yaml")


def target(service: object, **rest: object) -> dict[str, object]:
    return {"service": service, "quantity": 1, "max_price": "1.00", **rest}


def unresolved(spec: JobSpec, catalog: FakeCatalog | None = None) -> SpecError:
    with pytest.raises(SpecError) as caught:
        resolve_job(spec, catalog or FakeCatalog(), "job.yaml")
    return caught.value


def test_the_example_job_resolves_against_the_simulators_names() -> None:
    job = resolve_job(load_job_spec(EXAMPLE), FakeCatalog(), str(EXAMPLE))
    assert [(t.service_id, t.countries) for t in job.targets] == [
        (1012, [(16, "United Kingdom")]),
        (1100, [(1, "United States"), (16, "United Kingdom")]),
    ]
    assert job.budget == Decimal("20.00")
    assert job.code_timeout == 20.0


def test_names_resolve_to_ids_ignoring_case() -> None:
    job = resolve_job(
        spec_of(target("WHATSAPP", country="united kingdom")), FakeCatalog(), "job.yaml"
    )
    (resolved,) = job.targets
    assert (resolved.service_id, resolved.service_name) == (1012, "Whatsapp")
    assert resolved.countries == [(16, "United Kingdom")]


def test_ids_resolve_to_the_providers_names() -> None:
    job = resolve_job(spec_of(target(924, country="1")), FakeCatalog(), "job.yaml")
    assert (job.targets[0].service_name, job.targets[0].countries) == (
        "Tiktok/Douyin",
        [(1, "United States")],
    )


def test_countries_keep_the_users_order_of_preference() -> None:
    spec = spec_of(target("Whatsapp", countries=[48, "United States", 16]))
    job = resolve_job(spec, FakeCatalog(), "job.yaml")
    assert [country_id for country_id, _ in job.targets[0].countries] == [48, 1, 16]


def test_prices_are_asked_once_per_distinct_service() -> None:
    catalog = FakeCatalog()
    spec = spec_of(
        target("Whatsapp", country=16), target(1012, country=1), target("Telegram", country=1)
    )
    resolve_job(spec, catalog, "job.yaml")
    assert sorted(catalog.prices_asked) == [1012, 1100]


def test_the_job_settings_and_target_indexes_carry_over() -> None:
    spec = spec_of(
        target("Whatsapp", country=16, quantity=4, max_price=1.5),
        target("Telegram", countries=[1, 16], quantity=3, max_price="2.00"),
        budget=20,
        code_timeout="2m",
        schedule="@daily",
    )
    job = resolve_job(spec, FakeCatalog(), "job.yaml")
    assert (job.name, job.budget, job.code_timeout, job.schedule) == (
        "t",
        Decimal(20),
        120.0,
        "@daily",
    )
    assert [(t.index, t.quantity, t.max_price) for t in job.targets] == [
        (0, 4, Decimal("1.5")),
        (1, 3, Decimal("2.00")),
    ]


def test_an_unknown_service_name_is_refused_with_close_matches() -> None:
    error = unresolved(spec_of(target("Whatsap", country=16)))
    assert error.field == "targets[0].service"
    assert str(error) == (
        "job.yaml: targets[0].service: unknown service 'Whatsap'; did you mean 'Whatsapp' (1012)?"
    )


def test_part_of_a_service_name_suggests_the_whole_name() -> None:
    error = unresolved(spec_of(target("douyin", country=1)))
    assert "did you mean 'Tiktok/Douyin' (924)?" in error.problem


def test_a_service_name_like_nothing_listed_says_how_many_are_listed() -> None:
    error = unresolved(spec_of(target("Zzyzx", country=1)))
    assert error.problem == (
        "unknown service 'Zzyzx'; the provider lists"
        " Whatsapp (1012), Tiktok/Douyin (924), Telegram (1100), Google (1200)"
    )


def test_an_unknown_service_id_is_refused_naming_the_field() -> None:
    error = unresolved(spec_of(target("777", country=1)))
    assert (error.field, error.problem) == (
        "targets[0].service",
        "no service has id 777; the provider lists"
        " Whatsapp (1012), Tiktok/Douyin (924), Telegram (1100), Google (1200)",
    )


def test_a_service_name_listed_twice_by_the_provider_asks_for_the_id() -> None:
    catalog = FakeCatalog([*SERVICES, Service(1013, "WhatsApp")])
    error = unresolved(spec_of(target("whatsapp", country=16)), catalog)
    assert error.problem == "'whatsapp' names several services (1012, 1013); give the id instead"


def test_an_unknown_country_name_is_refused_with_close_matches() -> None:
    error = unresolved(spec_of(target("Telegram", countries=[16, "United Staets"])))
    assert error.field == "targets[0].countries[1]"
    assert error.problem == (
        "unknown country 'United Staets' for Telegram (1100); did you mean 'United States' (1)?"
    )


def test_a_country_the_service_is_not_offered_in_is_refused() -> None:
    error = unresolved(spec_of(target("Google", country=1)))
    assert (error.field, error.problem) == (
        "targets[0].country",
        "no country has id 1 for Google (1200); the provider lists United Kingdom (16)",
    )


def test_a_country_listed_twice_under_two_spellings_is_refused() -> None:
    error = unresolved(spec_of(target("Whatsapp", countries=[16, "United Kingdom"])))
    assert (error.field, error.problem) == (
        "targets[0].countries[1]",
        "lists United Kingdom (16) a second time",
    )


def test_every_unresolvable_name_is_reported_at_once() -> None:
    spec = spec_of(
        target("Whatsapp", country=16),
        target("Telegrm", country=1),
        target("Google", countries=["United Kingdom", "Mars"]),
    )
    error = unresolved(spec)
    assert error.field == "targets[1].service"
    assert error.problem.splitlines()[1].startswith("  targets[2].countries[1]: unknown country")


def test_provider_names_quoted_in_an_error_cannot_start_a_line_of_their_own() -> None:
    # Problems are printed one per line: a provider's name must not forge another one.
    catalog = FakeCatalog([Service(1012, "Whats\napp\x1b[31m"), Service(924, "x\rerror: y")])
    error = unresolved(spec_of(target(777, country=1)), catalog)
    assert "\n" not in error.problem and "\r" not in error.problem
    assert "\x1b" not in error.problem
    assert "Whats\\napp\\x1b[31m (1012)" in error.problem


# Codes targets and countries: any


def one_target(tmp_path: Path, body: str) -> Path:
    """A job whose only target has the keys in ``body`` (one ``key: value`` a line)."""
    first, *rest = body.splitlines()
    return job_with_target(tmp_path, "\n".join([f"- {first}", *(f"  {x}" for x in rest)]) + "\n")


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        ("codes: 2\nquantity: 2\n", ("both quantity", "codes")),
        ("max_price: 1\n", ("needs quantity", "or codes")),
        ("quantity: 2\nmax_numbers: 4\n", ("max_numbers without codes",)),
        ("codes: 5\nmax_numbers: 4\n", ("max_numbers 4 below codes 5",)),
        ("codes: 0\n", ("at least 1",)),
    ],
)
def test_a_target_asks_for_numbers_or_codes_and_says_which_mistake(
    tmp_path: Path, lines: str, words: tuple[str, ...]
) -> None:
    body = "service: Whatsapp\ncountry: 16\n" + lines
    if "max_price" not in lines:
        body += "max_price: 1\n"
    path = one_target(tmp_path, body)
    error = refused(path)
    assert error.field.startswith("targets[0]")
    for word in words:
        assert word in error.problem


def test_max_numbers_counts_toward_the_jobs_numbers(tmp_path: Path) -> None:
    path = one_target(tmp_path, "service: W\ncountry: 16\ncodes: 4000\nmax_price: 1\n")
    assert_names(refused(path), path, "targets", "12000 numbers", "max_numbers_per_job")


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        ("countries: [any, 16]\n", ('"any" beside other countries',)),
        ("country: 16\nexclude: [1]\n", ("exclude without countries: any",)),
    ],
)
def test_countries_any_stands_alone_and_exclude_needs_it(
    tmp_path: Path, lines: str, words: tuple[str, ...]
) -> None:
    path = one_target(tmp_path, "service: W\n" + lines + "quantity: 1\nmax_price: 1\n")
    error = refused(path)
    for word in words:
        assert word in error.problem


def test_countries_any_is_every_listed_country_but_those_excluded() -> None:
    job = resolve_job(
        spec_of(target("Telegram", countries="any", exclude=["United States"])),
        FakeCatalog(),
        "job.yaml",
    )
    (resolved,) = job.targets
    listed = {(p.country_id, p.country) for p in PRICES[1100]}
    assert set(resolved.countries) == listed - {(1, "United States")}
    assert resolved.countries


def test_an_unknown_excluded_country_is_named_like_any_other() -> None:
    error = unresolved(spec_of(target("Telegram", countries="ANY", exclude=["Atlantis"])))
    assert error.field == "targets[0].exclude[0]"
    assert "unknown country 'Atlantis'" in error.problem
