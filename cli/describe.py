"""``extract --describe NAME``, ``fuse --describe METHOD`` and ``finetune --describe``: every option
of one extractor, one head, or the fine-tune.

Each table row is one option as ``--set`` takes it (``configs.swin.crop_pct``, ``head.dim``), its
type, its default and one line of meaning. All of it is read from the config dataclasses
(:mod:`pipeline.config_doc`), so a new field of an extractor or head shows up here by itself.
All three are eager: they answer before the command's required options are checked.
"""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from cli._common import console
from pipeline.config_doc import Option, describe


def _table(title: str, options: list[Option]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("option", "type", "default"):
        table.add_column(column, overflow="fold", no_wrap=column == "option")
    table.add_column("meaning", overflow="fold")
    for option in options:
        table.add_row(option.key, option.type, option.default, option.meaning)
    return table


def _summary(cls: type) -> str:
    """The first paragraph of the class's docstring, else of its module's."""
    doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def extractor_options(name: str) -> tuple[str, list[Option]]:
    """(what the extractor is, its options as ``configs.NAME.FIELD``)."""
    from pipeline.errors import PipelineError
    from pipeline.features import extractors

    if not extractors.is_known(name):
        raise PipelineError(f"unknown extractor {name!r}; choose from {', '.join(extractors.names())}")
    cls = extractors.extractor_class(name)
    weights = "takes --weights" if cls.has_weights else "no weights"
    about = f"{name} ({cls.kind} extractor, {weights}): {_summary(cls)}"
    return about, describe(cls.Config, f"configs.{name}.")


def method_options(method: str) -> tuple[str, list[Option], list[Option]]:
    """(what the head is, its ``head.*`` options, the ``train.*`` ... options every head takes)."""
    from pipeline.fusion.config import FuseConfig
    from pipeline.fusion.heads import head_class

    cls = head_class(method)
    shared = [o for o in describe(FuseConfig)
              if o.key.split(".")[0] in ("train", "sampling", "loss", "bag")]
    return f"{method}: {_summary(cls)}", describe(cls.Config, "head."), shared


def describe_extractor(value: str | None) -> str | None:
    """Eager callback of ``extract --describe``: print the table and exit."""
    if value is None:
        return value
    about, options = extractor_options(value)
    console.print(about, highlight=False, soft_wrap=True)
    console.print(_table(f"options of {value} (--set configs.{value}.OPTION=VALUE)", options))
    raise typer.Exit()


def describe_method(value: str | None) -> str | None:
    """Eager callback of ``fuse --describe``: print the head's options, then the shared ones."""
    if value is None:
        return value
    about, own, shared = method_options(value)
    console.print(about, highlight=False, soft_wrap=True)
    console.print(_table(f"options of {value} (--set head.OPTION=VALUE)", own))
    console.print(_table("options of every method (--set SECTION.OPTION=VALUE)", shared))
    raise typer.Exit()


def describe_finetune(value: bool) -> bool:
    """Eager callback of ``finetune --describe``: print every option of the fine-tune and exit."""
    if not value:
        return value
    from pipeline.finetune.config import FinetuneConfig

    console.print(f"finetune: {_summary(FinetuneConfig)}", highlight=False, soft_wrap=True)
    console.print(_table("options of finetune (--set OPTION=VALUE)", describe(FinetuneConfig)))
    raise typer.Exit()
