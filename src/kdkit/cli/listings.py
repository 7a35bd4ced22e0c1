"""The commands that list what kdkit knows: datasets, models (and an architecture's layer names),
methods, and the documentation pages (docs)."""
import importlib.resources
import sys
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from kdkit.cli.shared import console
from kdkit.errors import KdkitError, shown, unknown


def datasets(data_dir: Optional[str] = typer.Option(None, help="also look here")):
    """Named datasets and where (if anywhere) their files were found.

    Examples:

      kdkit datasets

      kdkit datasets --data-dir data
    """
    from kdkit.data import DATASETS, dataset_status

    if data_dir is not None and not Path(data_dir).is_dir():
        raise KdkitError(f"--data-dir {shown(data_dir)} is not a folder; name the folder that holds the dataset files")
    status = {s["name"]: s for s in dataset_status(data_dir)}
    table = Table("name", "description", "found")
    for name, text in DATASETS.items():
        s = status.get(name, {})
        table.add_row(name, text, str(s.get("path") or s.get("found") or "no (downloads when online)"))
    console.print(table)
    console.print("Also: any ImageFolder path (train/<class>/*.png, test/<class>/...), a .csv or .parquet table "
                  "(--set label_column=NAME), or your own data in Python (docs/data.md).")


def models(
    layers: Optional[str] = typer.Option(None, "--layers", help="print the tappable layer names of this architecture"),
    in_channels: int = typer.Option(3, help="input channels for --layers"),
    image_size: int = typer.Option(32, help="input size for --layers"),
    num_classes: int = typer.Option(100, help="classes for --layers"),
):
    """Architectures by name, with their parameter counts for 3x32x32 input and 100 classes.

    Examples:

      kdkit models

      kdkit models --layers resnet8x4   (its tappable layer names, for the feature methods)
    """
    from kdkit.models import count_parameters, create_model, describe_model, list_models

    for flag, value, example, most in (("--in-channels", in_channels, 3, 1024), ("--image-size", image_size, 32, 4096),
                                       ("--num-classes", num_classes, 100, 1_000_000)):
        if not 1 <= value <= most:  # (the layer listing runs the model on one input of this size)
            raise KdkitError(f"{flag} must be in 1..{most}, got {shown(value)}; e.g. {flag} {example}")
    if layers is not None and not layers.strip():
        raise KdkitError("--layers is empty; name an architecture, e.g. --layers resnet8x4 (`kdkit models` lists them)")
    if layers:
        from kdkit.taps import layer_shapes

        model = create_model(layers, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        table = Table("layer name (for feature taps)", "module", "output shape", box=box.SIMPLE_HEAD)
        for name, kind, shape in layer_shapes(model, (in_channels, image_size, image_size)):
            table.add_row(name, kind, str(shape))
        console.print(table)
        console.print(f"stage outputs (default taps): {', '.join(getattr(model, 'feature_modules', []))}")
        return

    table = Table("name", "parameters", "description")
    for name in list_models():
        n = count_parameters(create_model(name, num_classes=100, in_channels=3, image_size=32))
        table.add_row(name, f"{n:,}", describe_model(name))
    console.print(table)
    console.print("Also: any nn.Module through the Python API, or --student my_pkg.my_module:make_net.")


def methods(name: Optional[str] = typer.Argument(None, help="a method: show each hyper-parameter's default, valid "
                                                            "values, search range and meaning")):
    """Distillation methods and their hyper-parameters (config keys).

    Examples:

      kdkit methods

      kdkit methods dkd   (its hyper-parameters: default, valid values, search range)
    """
    from kdkit.methods import METHODS, names

    if name is not None:
        console.print(_method_table(name))
        return
    table = Table("name", "what it transfers (paper)", "hyper-parameters (config keys)")
    for method, cls in METHODS.items():
        table.add_row(method, cls.paper, ", ".join(names(cls)))
    console.print(table)
    console.print("Compose with +, e.g. --method kd+fitnet (CE counted once; every term logged). "
                  "`kdkit methods NAME` shows one method's hyper-parameters.")


def _method_table(name: str) -> Table:
    """One method's hyper-parameters: key, default, valid values, search range (* = searched by default), meaning."""
    from kdkit.config import METHOD_KEYS, DistillConfig, valid_values
    from kdkit.methods import defaults_of, hyperparameters_of, method_parts

    method_parts(name)
    table = Table("key", "default", "valid", "search (* by default)", "meaning", title=f"method {name}")
    defaults = defaults_of(name)
    for key in hyperparameters_of(name):
        declared = METHOD_KEYS.get(key)
        meaning = declared.hyper.doc if declared else "a training key (`kdkit train` reads it too)"
        default = defaults.get(key, getattr(DistillConfig, key, ""))
        default = list(default) if isinstance(default, tuple) else default
        search = declared.hyper.describe_search() if declared else "-"
        table.add_row(key, str(default), valid_values(DistillConfig, key), search, meaning)
    return table


def docs_folder():
    """The documentation pages: inside the installed package (kdkit/docs/, put there by setup.py) or,
    in a source checkout (editable install, PYTHONPATH=src), the repository's docs/."""
    shipped = importlib.resources.files("kdkit") / "docs"
    return shipped if shipped.is_dir() else Path(__file__).resolve().parents[3] / "docs"


def doc_pages() -> dict:
    """page name (file name without .md) -> the page, sorted by name."""
    return {page.name[:-3]: page for page in sorted(docs_folder().iterdir(), key=lambda p: p.name) if page.name.endswith(".md")}


def docs(page: Optional[str] = typer.Argument(None, help="a page, e.g. config, errors, methods, report, tune")):
    """The documentation, installed with kdkit: without PAGE the list of pages, with PAGE that page (Markdown).

    Examples:

      kdkit docs

      kdkit docs config   (every config key)
    """
    pages = doc_pages()
    if page is None:
        table = Table("page", "title", box=box.SIMPLE_HEAD)
        for name, path in pages.items():
            title = next((line[2:] for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# ")), "")
            table.add_row(name, title)
        console.print(table)
        console.print(f"kdkit docs PAGE prints one; the files: {docs_folder()}")
        return
    name = page.strip().lower().removesuffix(".md")
    if name not in pages:
        raise unknown("docs page", page, pages)
    sys.stdout.write(pages[name].read_text(encoding="utf-8"))
