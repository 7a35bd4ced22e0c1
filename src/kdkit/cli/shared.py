"""What the command modules share: the console every command prints to, the --trust-hook option
and the check of an empty --dataset."""
import sys

import typer
from rich.console import Console

from kdkit.errors import KdkitError

console = Console(width=None if sys.stdout.isatty() else 120)  # logs and pipes get the whole table

TrustOpt = typer.Option(None, "--trust-hook", help="a module:function model hook that weights' sidecars may name "
                        "(kdkit never imports a name read from a file otherwise; repeatable)")


def check_dataset_option(dataset: str | None):
    """--dataset may be left out (the model's own), not given empty."""
    if dataset is not None and not dataset.strip():
        raise KdkitError("--dataset is empty; name a dataset or an ImageFolder path, or leave it out to use the "
                         "one the model was trained on")
