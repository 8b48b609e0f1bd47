"""Click's help conventions on the command tree typer builds: ``-h``, ``ROOT``, flags without a type.

Typer's help shows every option's type in angle brackets, ``<bool>`` for a plain flag too (which
takes no value: ``--allow-skips true`` is refused), and writes a required argument as ``{root}``
in the usage line. Click's own convention, which every flag of this CLI follows, is a flag that
shows no value and an argument named in capitals (``ROOT``, ``[OUT]``, ``RUN_DIRS...``).
:func:`apply` walks the click command tree once, after typer built it, so that each command's
declaration stays a plain ``typer.Option``/``typer.Argument``.
"""

from __future__ import annotations

from typing import Any

from typer import Context
from typer.core import TyperArgument, TyperGroup, TyperOption

HELP_OPTION_NAMES = ["-h", "--help"]


class _Argument(TyperArgument):
    """An argument as click writes it in the usage line: ``ROOT``, ``[ROOT]``, ``ROOTS...``."""

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        if self.nargs != 1:
            name += "..."
        return [name if self.required else f"[{name}]"]


class _Flag(TyperOption):
    """A flag (``--allow-skips``) shows no value type: it takes none."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _fix(command: Any) -> None:
    # The help option is made (once, then cached) on first use: make it now to fix it too.
    help_option = command.get_help_option(Context(command, help_option_names=HELP_OPTION_NAMES))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "").upper()
            param.__class__ = _Argument
        elif isinstance(param, TyperOption) and (param.is_flag or param.count):
            param.__class__ = _Flag
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            _fix(sub)


def apply(command: Any) -> Any:
    """``command`` (the root group) with ``-h`` as ``--help`` and click's help conventions on
    every command below it; returns it."""
    command.context_settings = {**command.context_settings, "help_option_names": HELP_OPTION_NAMES}
    _fix(command)
    return command
