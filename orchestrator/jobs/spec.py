"""The job file: its schema, and how it is loaded and checked (errors name the file and field).

How its names become provider ids is ``resolve``'s.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from orchestrator.config import DEFAULT_MAX_JOB_FILE_BYTES, DEFAULT_MAX_NUMBERS_PER_JOB, Settings
from orchestrator.durations import parse_duration
from orchestrator.errors import SpecError
from orchestrator.jobs.budget_fit import refuse_unaffordable

DEFAULT_CODE_TIMEOUT = 600.0
MONEY_PLACES = 4
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
# The name ends up in file names: no separators, no leading dot or dash, no "..".
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DURATION_HINT = "a duration like 45s, 10m, 1.5m, 1h30m or a number of seconds"

Loc = tuple[int | str, ...]


def _shown(value: object) -> str:
    """Describe a value read from the file, briefly, for an error message."""
    if isinstance(value, bool):
        # YAML 1.1 reads yes/no/on/off (and the country code NO) as booleans.
        return f"{str(value).lower()} (a boolean; quote it if you meant text)"
    if value is None:
        return "nothing"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def parse_money(value: object) -> Decimal:
    """Return ``value`` as an exact amount of money greater than 0, with at most 4 decimals.

    Accepts ints, floats, numeric strings and Decimals; a float goes through ``str()`` so 1.1
    stays 1.1 and not 1.100000000000000088817841970012523233890533447265625. Raises
    ``ValueError`` for booleans, zero, negatives, NaN, infinities and anything not a number.
    """
    # ValueError, not TypeError, throughout: pydantic turns only ValueError into a field error.
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"must be an amount of money like 1.50, got {_shown(value)}")  # noqa: TRY004
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"must be an amount of money like 1.50, got {_shown(value)}") from None
    if not amount.is_finite():
        raise ValueError(f"must be a finite amount of money, got {_shown(value)}")
    if amount <= 0:
        raise ValueError(f"must be more than 0, got {_shown(value)}")
    try:
        exact = amount.quantize(_QUANTUM)
    except InvalidOperation:
        raise ValueError(f"is too large to be an amount of money, got {_shown(value)}") from None
    if exact != amount:
        raise ValueError(f"must have at most {MONEY_PLACES} decimal places, got {_shown(value)}")
    exponent = amount.as_tuple().exponent
    # Keep what the user wrote ("1.50"), except forms that would print oddly ("1E+2", "1.50000").
    if isinstance(exponent, int) and exponent > 0:
        return amount.quantize(Decimal(1))
    return exact if isinstance(exponent, int) and exponent < -MONEY_PLACES else amount


@dataclass(frozen=True)
class JobLimits:
    """How large a job may be: the settings ``max_job_file_bytes`` and ``max_numbers_per_job``."""

    max_file_bytes: int = DEFAULT_MAX_JOB_FILE_BYTES
    max_numbers: int = DEFAULT_MAX_NUMBERS_PER_JOB

    @classmethod
    def of(cls, settings: Settings) -> JobLimits:
        """The limits the settings set."""
        return cls(settings.max_job_file_bytes, settings.max_numbers_per_job)


def _limits(info: ValidationInfo) -> JobLimits:
    context = info.context
    limits = context.get("limits") if isinstance(context, dict) else None
    return limits if isinstance(limits, JobLimits) else JobLimits()


def _too_many(count: int, limit: int) -> str:
    return (
        f"more than max_numbers_per_job ({limit}); raise that setting for a job meant to "
        f"buy {count} numbers"
    )


def _parse_quantity(value: object, info: ValidationInfo) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a whole number of at least 1, got {_shown(value)}")
    limit = _limits(info).max_numbers
    if value > limit:
        # Checked here, before planning: 10**20 would overflow the database's integers, and
        # a million rows take a minute and gigabytes to plan.
        raise ValueError(f"is {_shown(value)}, {_too_many(value, limit)}")
    return value


def _parse_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            f" (it becomes part of file names), got {_shown(value)}"
        )
    return value


def _parse_ref(value: object) -> int | str:
    """An id (an int, or digits as text) or a name, as given for a service or a country."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.isascii() and text.isdigit() else text
    raise ValueError(f"must be a name or a numeric id, got {_shown(value)}")


def _parse_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be {_DURATION_HINT}, got {_shown(value)}")  # noqa: TRY004
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than 0 seconds, got {_shown(value)}")
    return seconds


def _parse_schedule(value: object) -> str:
    text = " ".join(value.split()) if isinstance(value, str) else ""
    # Five fields only: croniter would also take a sixth (seconds) and seventh (year) field,
    # which other cron tools read differently; "@daily" and friends are unambiguous.
    if not (text.startswith("@") or len(text.split()) == 5) or not croniter.is_valid(text):
        raise ValueError(
            "must be a cron expression of five fields (minute hour day month weekday) like"
            f' "0 3 * * *", or @hourly/@daily/@weekly/@monthly, got {_shown(value)}'
        )
    return text


Money = Annotated[Decimal, PlainValidator(parse_money)]
Ref = Annotated[int | str, PlainValidator(_parse_ref)]
Count = Annotated[int, PlainValidator(_parse_quantity)]
ANY_COUNTRY = "any"


def _is_any(ref: int | str) -> bool:
    return isinstance(ref, str) and ref.casefold() == ANY_COUNTRY


CODES_TO_NUMBERS = 3  # max_numbers defaults to this many numbers per code wanted


class TargetSpec(BaseModel):
    """One target of a job file: how many numbers (``quantity``) or codes (``codes``) of a
    service, from where, at what cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Ref
    country: Ref | None = None
    countries: list[Ref] | None = Field(default=None, min_length=1)
    exclude: list[Ref] | None = None
    quantity: Count | None = None
    codes: Count | None = None
    max_numbers: Count | None = None
    max_price: Money

    @field_validator("countries", mode="before")
    @classmethod
    def _any_is_a_list_of_one(cls, value: object) -> object:
        # `countries: any` reads as the list [any]; the item is checked like any other.
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_of_each(self) -> TargetSpec:
        if self.country is not None and self.countries is not None:
            raise ValueError("has both country and countries; give only one of them")
        if self.country is None and self.countries is None:
            raise ValueError("needs a country (or a countries list, or countries: any)")
        if self.countries and len(self.countries) > 1 and any(_is_any(c) for c in self.countries):
            raise ValueError('lists "any" beside other countries; "any" already means them all')
        if self.exclude is not None and not self.any_country:
            raise ValueError("has exclude without countries: any; exclude narrows any")
        if self.quantity is not None and self.codes is not None:
            raise ValueError(
                "has both quantity (numbers to buy) and codes (codes to get); give one of them"
            )
        if self.quantity is None and self.codes is None:
            raise ValueError("needs quantity (numbers to buy) or codes (codes to get)")
        if self.max_numbers is not None and self.codes is None:
            raise ValueError("has max_numbers without codes; quantity already caps the numbers")
        if (
            self.codes is not None
            and self.max_numbers is not None
            and self.max_numbers < self.codes
        ):
            raise ValueError(
                f"has max_numbers {self.max_numbers} below codes {self.codes}: "
                "each code needs a number of its own"
            )
        return self

    @property
    def any_country(self) -> bool:
        """Whether every country the provider lists for the service is allowed."""
        return (
            self.countries is not None and len(self.countries) == 1 and _is_any(self.countries[0])
        )

    @property
    def country_refs(self) -> list[int | str]:
        """The countries as written, in the user's order of preference (none for ``any``)."""
        if self.country is not None:
            return [self.country]
        return [] if self.any_country else list(self.countries or [])

    @property
    def numbers_at_most(self) -> int:
        """The most numbers this target may buy: its quantity, or max_numbers for codes."""
        if self.quantity is not None:
            return self.quantity
        assert self.codes is not None
        return self.max_numbers or CODES_TO_NUMBERS * self.codes


class JobSpec(BaseModel):
    """A job file as written: validated, but with names not yet resolved to ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, PlainValidator(_parse_name)]
    budget: Money | None = None
    code_timeout: Annotated[float, PlainValidator(_parse_timeout)] = DEFAULT_CODE_TIMEOUT
    schedule: Annotated[str, PlainValidator(_parse_schedule)] | None = None
    targets: list[TargetSpec] = Field(min_length=1)


def load_job_spec(path: str | Path, limits: JobLimits = JobLimits()) -> JobSpec:
    """Read, parse and validate the job file at ``path``, without touching the network.

    Raises ``SpecError`` naming the file, the field and the problem. When there are several
    problems, all are reported at once, in file order: ``field`` is the first one's, and
    ``problem`` holds the first problem, then one indented ``field: problem`` line per other.
    """
    return parse_job_spec(read_job_file(path, limits.max_file_bytes), str(path), limits)


def read_job_file(path: str | Path, max_bytes: int = DEFAULT_MAX_JOB_FILE_BYTES) -> str:
    """The job file's text, reading at most ``max_bytes`` + 1 bytes: a larger file (or an
    endless one, like /dev/zero) is refused at once with a ``SpecError``."""
    shown = str(path)
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise SpecError(shown, "", "no such file") from None
    except IsADirectoryError:
        raise SpecError(shown, "", "is a directory, not a job file") from None
    except OSError as exc:
        raise SpecError(shown, "", f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise SpecError(
            shown,
            "",
            f"is larger than {max_bytes} bytes (max_job_file_bytes); raise that setting if "
            "this is the job file you meant",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(shown, "", f"is not UTF-8 text (bad byte at offset {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as read_text() reads it


def parse_job_spec(text: str, path: str, limits: JobLimits = JobLimits()) -> JobSpec:
    """Parse and validate a job file's text; ``path`` only labels the errors."""
    data, root = _parse_yaml(text, path)
    return _validate(data, path, root, limits)


def _parse_yaml(text: str, path: str) -> tuple[object, yaml.Node | None]:
    """Parse ``text``, keeping the node tree so validation errors can name a line."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _refuse_duplicate_keys(root, (), path, set())
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = f"is not valid YAML: {exc.problem or exc.context or 'syntax error'}{where}"
        if "alphabetic or numeric" in problem:
            # An unquoted cron schedule starting with "*" is read as a YAML alias.
            problem += '; quote values that start with * or &, like "* * * * *"'
        raise SpecError(path, "", problem) from None
    except yaml.YAMLError as exc:
        raise SpecError(path, "", f"is not valid YAML: {exc}") from None
    except ValueError as exc:  # a number longer than Python converts (4300 digits)
        raise SpecError(path, "", f"holds a value that cannot be read: {exc}") from None
    finally:
        loader.dispose()
    if data is None:
        raise SpecError(path, "", "is empty; a job needs at least a name and targets")
    return data, root


def _refuse_duplicate_keys(node: yaml.Node, loc: Loc, path: str, seen: set[int]) -> None:
    # PyYAML silently keeps the last of two equal keys; in a job file that hides a mistake
    # about money or quantity, so it is an error. `seen` stops on recursive aliases.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line, ident = key.start_mark.line + 1, (key.tag, key.value)
                if ident in lines:
                    first = lines[ident]
                    where = f"lines {first} and {line}" if first != line else f"line {line}"
                    raise SpecError(
                        path, _field_path((*loc, key.value)), f"appears twice ({where})"
                    )
                lines[ident] = line
                _refuse_duplicate_keys(value, (*loc, key.value), path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, (*loc, index), path, seen)


def _validate(data: object, path: str, root: yaml.Node | None, limits: JobLimits) -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError(
            path, "", f"must be a mapping of keys (name, targets, ...), got {_shown(data)}"
        )
    try:
        spec = JobSpec.model_validate(data, context={"limits": limits})
    except ValidationError as exc:
        located = [(_line_of(root, error["loc"]), error) for error in exc.errors()]
        # In file order, so the first problem reported is the first a reader meets.
        located.sort(key=lambda item: item[0] or 0)
        problems = [
            (_field_path(error["loc"]), _problem(error) + (f" (line {line})" if line else ""))
            for line, error in located
        ]
        raise spec_error(path, problems) from None
    total = sum(target.numbers_at_most for target in spec.targets)
    if total > limits.max_numbers:
        line = _line_of(root, ("targets",))
        where = f" (line {line})" if line else ""
        problem = f"ask for {total} numbers in all, {_too_many(total, limits.max_numbers)}"
        raise SpecError(path, "targets", problem + where)
    refuse_unaffordable(spec, path)
    return spec


def _problem(error: ErrorDetails) -> str:
    """Say what is wrong in a few words, instead of pydantic's full report."""
    kind, loc, value = error["type"], error["loc"], error["input"]
    ctx = error.get("ctx", {})
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        fields = JobSpec.model_fields if len(loc) == 1 else TargetSpec.model_fields
        close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}"
        return f"is not a known key; {hint}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "list_type":
        return f"must be a list, got {_shown(value)}"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"must be a mapping of keys (service, quantity, ...), got {_shown(value)}"
    return error["msg"]


def _field_path(loc: Loc) -> str:
    """``("targets", 0, "quantity")`` -> ``targets[0].quantity``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _line_of(root: yaml.Node | None, loc: Loc) -> int | None:
    """The line of the deepest node ``loc`` reaches (the parent, for a missing key)."""
    node, found = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            values = [value for key, value in node.value if key.value == part]
            node = values[0] if values else None
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        found = node
    return found.start_mark.line + 1 if found is not None else None


def spec_error(path: str, problems: list[tuple[str, str]]) -> SpecError:
    """One ``SpecError`` for all ``(field, problem)`` pairs: the first, then one line per other."""
    (field, problem), *others = problems
    lines = [problem, *(f"  {other}: {text}" if other else f"  {text}" for other, text in others)]
    return SpecError(path, field, "\n".join(lines))
