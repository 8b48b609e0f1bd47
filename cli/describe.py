"""``--describe``: what a command's options are, read from the config dataclasses.

- ``extract --describe`` and ``fuse --describe`` without a name list the extractors or heads
  (and presets); with a NAME, that extractor's or head's options.
- ``finetune --describe`` and ``faces --describe`` list their command's options.
- Short by default: the options people change, grouped (:data:`FUSE_COMMON`,
  :data:`FINETUNE_COMMON`, :data:`FACES_COMMON`; a head's or extractor's own options are all
  shown); ``--all`` gives every option with its type.

Each row is one option as ``--set`` takes it (``configs.swin.crop_pct``, ``head.dim``), its
default and one line of meaning, all read from the config dataclasses
(:mod:`pipeline.config_doc`), so a new field shows up here by itself (under ``--all``; in the
short view once it is named in a group). The callbacks are eager: they answer before the
command's required options are checked. ``--describe`` and ``--all`` may come in either order:
each callback records its part in the click context and the second one to run prints.
"""

from __future__ import annotations

from typing import Callable, Sequence

import typer
from rich.table import Table
from typer.core import TyperCommand

from cli._common import console
from pipeline.config_doc import Option, describe
from pipeline.registry import summary
from pipeline.suggest import did_you_mean

# The options people change, by group: what --describe shows without --all (tests check that
# every key exists, so a renamed option cannot silently vanish from the short view).
FUSE_COMMON: dict[str, tuple[str, ...]] = {
    "schedule": ("train.epochs", "train.patience", "train.min_epochs", "train.batch_size",
                 "train.lr", "train.schedule.kind", "train.schedule.warmup_epochs",
                 "train.optimizer", "train.weight_decay", "train.ema_epochs"),
    "selection": ("train.select_on", "train.dev_fraction", "task.classes"),
    "data": ("sampling.balance", "sampling.interval"),
    "loss": ("loss.kind", "loss.label_smoothing"),
    "machine": ("train.device", "train.threads", "train.cache_mb"),
    "logs": ("log.tensorboard",),
}
FINETUNE_COMMON: dict[str, tuple[str, ...]] = {
    "what to train": ("backbone", "model", "weights", "head", "tasks", "task_schedule", "frozen"),
    "schedule": ("epochs", "patience", "min_epochs", "batch_size", "accumulate", "optimizer", "lr",
                 "head_lr", "lr_decay", "schedule.kind", "schedule.warmup_epochs", "weight_decay"),
    "data": ("input_size", "augment.enabled", "sampling.balance", "sampling.interval",
             "dev_fraction", "dev_min_videos"),
    "loss": ("loss.kind", "loss.label_smoothing"),
    "machine": ("device", "precision", "threads", "workers"),
    "logs": ("log.tensorboard",),
}
FACES_COMMON: dict[str, tuple[str, ...]] = {
    "detector": ("detector", "onnx", "weights", "min_face"),
    "crops": ("size", "scale"),
    "tracks": ("all_faces", "two_person", "min_frames", "cut_threshold", "cut_spike"),
    "machine": ("batch", "scheduler"),
}

_PENDING = "fer-pipeline.describe"  # ctx.meta: what --describe asked for (None: nothing)
_ALL = "fer-pipeline.describe-all"  # ctx.meta: the --all flag


def _table(title: str, options: list[Option], types: bool = True) -> Table:
    """A table of options; without ``types`` a compact one (no type column, no borders)."""
    table = Table(title=title, title_justify="left", title_style="bold") if types else Table(
        title=title, title_justify="left", title_style="bold", box=None, show_header=False)
    columns = ("option", "type", "default") if types else ("option", "default")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "option")
    table.add_column("meaning", overflow="fold")
    for option in options:
        cells = (option.key, option.type, option.default) if types else (option.key, option.default)
        table.add_row(*cells, option.meaning)
    return table


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)


def common(options: list[Option], groups: dict[str, tuple[str, ...]]) -> dict[str, list[Option]]:
    """``groups`` with each key replaced by its option (a key that is not an option is a bug)."""
    by_key = {o.key: o for o in options}
    missing = [k for keys in groups.values() for k in keys if k not in by_key]
    assert not missing, f"common options that are not options: {missing}"
    return {group: [by_key[k] for k in keys] for group, keys in groups.items()}


def _short(groups: dict[str, list[Option]], total: int, command: str, shown: int = 0) -> None:
    """The grouped options; ``shown``: how many of ``total`` were printed before them."""
    for group, options in groups.items():
        console.print(_table(group, options, types=False))
        shown += len(options)
    _say(f"{shown} of {total} options shown; `{command} --all` lists every one with its type. "
         "Set one with --set OPTION=VALUE.")


# -- what each command describes

def log_options() -> list[Option]:
    """The ``log.*`` options of ``fuse`` and ``finetune`` (:mod:`pipeline.epoch_log`)."""
    from pipeline.epoch_log import LogConfig

    return describe(LogConfig, "log.")


def extractor_options(name: str) -> tuple[str, list[Option]]:
    """(what the extractor is, its options as ``configs.NAME.FIELD``)."""
    from pipeline.errors import PipelineError
    from pipeline.features import extractors

    if not extractors.is_known(name):
        names = extractors.names()
        raise PipelineError(f"unknown extractor {name!r}; choose from {', '.join(names)}"
                            f"{did_you_mean(name, names)}")
    cls = extractors.extractor_class(name)
    weights = "takes --weights" if cls.has_weights else "no weights"
    about = f"{name} ({cls.kind} extractor, {weights}): {summary(cls)}"
    return about, describe(cls.Config, f"configs.{name}.")


def method_options(method: str) -> tuple[str, list[Option], list[Option]]:
    """(what the head is, its ``head.*`` options, the ``train.*`` ... and ``log.*`` options every
    head takes)."""
    from pipeline.fusion.config import FuseConfig
    from pipeline.fusion.heads import head_class

    cls = head_class(method)
    shared = [o for o in describe(FuseConfig)
              if o.key.split(".")[0] in ("train", "sampling", "loss", "bag", "classifier", "task")]
    return f"{method}: {summary(cls)}", describe(cls.Config, "head."), shared + log_options()


def finetune_options() -> list[Option]:
    from pipeline.finetune.config import FinetuneConfig

    return describe(FinetuneConfig) + log_options()


def _names_table(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("what it is", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _list_extractors() -> None:
    from pipeline.features import extractors

    rows = []
    for name in extractors.names():
        cls = extractors.extractor_class(name)
        rows.append((name, f"{cls.kind}, {'takes --weights' if cls.has_weights else 'no weights'}:"
                           f" {summary(cls)}"))
    console.print(_names_table("extractors (extract -e NAME)", rows))
    _say("`extract --describe NAME` lists one extractor's options.")


def _list_methods() -> None:
    from pipeline.fusion.heads import HEADS
    from pipeline.fusion.presets import PRESETS

    console.print(_names_table("heads (fuse --method NAME)", HEADS.rows()))
    console.print(_names_table("presets (fuse --preset NAME)",
                               [(name, f"{p.paper} (methods: {', '.join(p.methods)})")
                                for name, p in PRESETS.items()]))
    _say("`fuse --describe METHOD` lists one head's options and those every head shares.")


# -- the eager callbacks

def _request(ctx: typer.Context, key: str, value: object) -> None:
    """Record ``value`` under ``key``; once both --describe's and --all's callbacks have run,
    print what --describe asked for and exit."""
    if ctx.resilient_parsing:  # shell completion: print nothing
        return
    ctx.meta[key] = value
    if _PENDING in ctx.meta and _ALL in ctx.meta and ctx.meta[_PENDING] is not None:
        show: Callable[[bool], None] = ctx.meta[_PENDING]
        show(bool(ctx.meta[_ALL]))
        raise typer.Exit()


def all_option() -> bool:
    """The ``--all`` option of a command that has ``--describe``."""
    return typer.Option(False, "--all", is_eager=True, expose_value=False, callback=describe_all,
                        help="With --describe: every option with its type, not only the ones "
                             "people change.")


def describe_all(ctx: typer.Context, value: bool) -> bool:
    _request(ctx, _ALL, value)
    return value


def describe_extractor(ctx: typer.Context, value: str | None) -> str | None:
    """``extract --describe [NAME]``: the extractors, or one extractor's options."""
    def show(everything: bool) -> None:
        if not value:
            return _list_extractors()
        about, options = extractor_options(value)
        _say(about)
        console.print(_table(f"options of {value} (--set configs.{value}.OPTION=VALUE)", options))

    _request(ctx, _PENDING, None if value is None else show)
    return value


def describe_method(ctx: typer.Context, value: str | None) -> str | None:
    """``fuse --describe [METHOD]``: the heads and presets, or one head's options (its own, then
    the shared ones: the common ones grouped, or with --all every one)."""
    def show(everything: bool) -> None:
        if not value:
            return _list_methods()
        about, own, shared = method_options(value)
        _say(about)
        console.print(_table(f"options of {value} (--set head.OPTION=VALUE)", own, everything))
        if everything:
            console.print(_table("options of every method (--set SECTION.OPTION=VALUE)", shared))
        else:
            _short(common(shared, FUSE_COMMON), len(own) + len(shared), f"fuse --describe {value}",
                   shown=len(own))

    _request(ctx, _PENDING, None if value is None else show)
    return value


def describe_finetune(ctx: typer.Context, value: bool) -> bool:
    """``finetune --describe``: the backbones and presets, then the options."""
    def show(everything: bool) -> None:
        from pipeline.finetune.backbone_choice import BACKBONES
        from pipeline.finetune.config import FinetuneConfig
        from pipeline.finetune.presets import FINETUNE_PRESETS

        _say(f"finetune: {summary(FinetuneConfig)}")
        _say(f"backbones (--backbone): {', '.join(BACKBONES.classes())}; presets (--preset): "
             f"{', '.join(FINETUNE_PRESETS)}")
        options = finetune_options()
        if everything:
            console.print(_table("options of finetune (--set OPTION=VALUE)", options))
        else:
            _short(common(options, FINETUNE_COMMON), len(options), "finetune --describe")

    _request(ctx, _PENDING, show if value else None)
    return value


def describe_faces(ctx: typer.Context, value: bool) -> bool:
    """``faces --describe``: the face-cropping options."""
    def show(everything: bool) -> None:
        from pipeline.data.faces.config import FacesConfig

        from pipeline.data.faces.detectors import DETECTORS

        _say(f"faces: {summary(FacesConfig)}")
        _say(f"detectors (--set detector=NAME): {DETECTORS.choices()}")
        options = describe(FacesConfig)
        if everything:
            console.print(_table("options of faces (--set OPTION=VALUE)", options))
        else:
            _short(common(options, FACES_COMMON), len(options), "faces --describe")

    _request(ctx, _PENDING, show if value else None)
    return value


def registry_help(option: str, text: Callable[[], str]) -> type[TyperCommand]:
    """A command class whose help shows ``text()`` for ``option``, computed when the help is
    shown: a plug-in registered after import (an entry point, a test) is listed, and commands
    whose help is not shown import no plug-in module."""
    class RegistryHelp(TyperCommand):
        def format_help(self, ctx, formatter) -> None:  # noqa: ANN001 (click's types)
            for param in self.params:
                if param.name == option:
                    param.help = text()
            super().format_help(ctx, formatter)

    return RegistryHelp


def backbone_help() -> str:
    """``finetune --backbone``'s help: every registered backbone and what it trains on."""
    from pipeline.finetune.backbone_choice import BACKBONES

    return ", ".join(f"{name} ({cls.trains_on})" for name, cls in BACKBONES.classes().items()) + "."


# Commands whose --describe takes a NAME (and lists the names without one).
NAMED = ("extract", "fuse")


def optional_name(args: list[str]) -> list[str]:
    """``args`` with an empty NAME after a bare ``--describe`` of :data:`NAMED` commands (the
    parser typer vendors has no option whose value may be left out): ``fuse --describe`` and
    ``fuse --describe --all`` then list the names."""
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in NAMED:
        return args
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        out.append(arg)
        if arg == "--describe" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("")
    return out
