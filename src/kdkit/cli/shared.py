"""What the command modules share: the console every command prints to, the options that set a
config key (`config_option`: --help shows the config's default), the --trust-hook option and the
check of an empty --dataset."""
import dataclasses
import sys

import typer
from rich.console import Console

from kdkit.errors import KdkitError

console = Console(width=None if sys.stdout.isatty() else 120)  # logs and pipes get the whole table

TrustOpt = typer.Option(None, "--trust-hook", help="a module:function model hook that weights' sidecars may name "
                        "(kdkit never imports a name read from a file otherwise; repeatable) \\[default: none]")


def check_dataset_option(dataset: str | None):
    """--dataset may be left out (the model's own), not given empty."""
    if dataset is not None and not dataset.strip():
        raise KdkitError("--dataset is empty; name a dataset or an ImageFolder path, or leave it out to use the "
                         "one the model was trained on")


def config_option(cls, key: str, help: str, *flags: str, default: str | None = None):
    """A flag for config key `key` of `cls` (TrainConfig or DistillConfig). Left out it stays None:
    the value comes from --config, else the dataclass's default, which --help shows after `help`
    (`default` replaces it where the command has its own, e.g. tune's --out)."""
    return typer.Option(None, *flags, help=f"{help} \\[default: {default or default_text(cls, key)}]")


def default_text(cls, key: str) -> str:
    """The default of `key` in words: 10, cnn-tiny, on/off, 0,1 (a list), 'not set', or the methods' own
    defaults where they differ (temperature: 4 (kd, dkd, ...), 1 (dist, dml))."""
    from kdkit.config import METHOD_KEYS

    field = next(f for f in dataclasses.fields(cls) if f.name == key)
    value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if value is None and key in METHOD_KEYS and METHOD_KEYS[key].defaults:
        by_value = {}
        for method, own in METHOD_KEYS[key].defaults.items():
            by_value.setdefault(own, []).append(method)
        return "the method's own: " + ", ".join(f"{own:g} ({', '.join(names)})" for own, names in by_value.items())
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return "not set" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
