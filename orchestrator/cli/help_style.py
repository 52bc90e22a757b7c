"""How ``--help`` and the usage line show parameters: as Unix tools do, not as Python types.

typer 0.2x labels every parameter with its Python type (``<bool>`` on a flag, ``<list[str]>``)
and puts a required argument in braces (``run [OPTIONS] {job_file}``). Every command and group
is built with the classes here instead: a flag shows no placeholder, an option's value and an
argument show an upper-case name (``--workers INTEGER``, ``JOB_FILE``, ``[JOBS]...``), and the
usage line reads ``orchestrator run [OPTIONS] JOB_FILE``. A ``metavar=`` given by a command
wins. ``tests/test_conventions.py`` reads every command's help.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# ``ctx`` is typed Any below: the context class typer's methods name is private (typer._click).

# typer's type labels, as the placeholders click has always shown for them.
_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "int range": "INTEGER",
    "float range": "FLOAT",
    "Decimal": "DECIMAL",
}


def _placeholder(param: TyperArgument | TyperOption, ctx: Any) -> str:
    label = str(TyperArgument.display_type(param, ctx) or "").strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[len("list[") : -1]  # a repeatable option: one value per use
    if "|" in label:  # choices, shown as they are typed
        return f"[{label}]"
    return _NAMES.get(label, label.upper())


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return _placeholder(self, ctx)


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return self.metavar or _placeholder(self, ctx)


def _conventional(params: list[Any]) -> list[Any]:
    for param in params:
        if type(param) is TyperArgument:
            param.__class__ = _Argument
            if param.metavar is None:  # the name in the table, the usage line and errors
                dots = "..." if param.nargs != 1 else ""
                param.metavar = f"{str(param.name).upper()}{dots}"
        elif type(param) is TyperOption:
            param.__class__ = _Option
    return params


class Command(TyperCommand):
    """A command whose help and usage line follow the convention above."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = str(param.metavar)
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class Group(TyperGroup):
    """A group (``orchestrator``, ``orchestrator db``) whose options follow the convention."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional(super().get_params(ctx))
