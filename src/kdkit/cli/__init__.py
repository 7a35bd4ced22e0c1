"""The `kdkit` command line. Every command has --help; user errors are one line, no traceback.

  kdkit demo                       Fashion-MNIST: teacher, scratch student, KD student, the table
  kdkit train --dataset D --model ARCH --epochs N --out DIR
  kdkit distill --dataset D --teacher RUN_DIR_OR_WEIGHTS_OR_ARCH --student ARCH --method kd --seeds 0,1,2 --out DIR
  kdkit distill --config FILE.yaml [--set key=value ...]
  kdkit tune --dataset D --teacher ARCH --student ARCH --method kd --trials 20 [--storage URL] --out DIR
  kdkit evaluate WEIGHTS_OR_RUN_DIR --dataset D
  kdkit datasets | models | methods
  kdkit docs [PAGE]                the documentation pages (config, errors, methods, ...)
  kdkit --version

Where the commands live: runs.py (train, distill, ensemble, tune, demo), results.py (evaluate,
report, compare), ship.py (export, predict), listings.py (datasets, models, methods, docs); shared.py
holds the console and what several of them use. This file builds the app and runs it (`main`).
"""
import os
import sys

import typer

from kdkit.cli import listings, results, runs, ship
from kdkit.cli.shared import console
from kdkit.errors import KdkitError, shown

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kdkit: distill a big teacher into a small student, and show the evidence. "
                       "Documentation: `kdkit docs` (installed with kdkit).")
_debug = {"on": False}


def _version(value: bool):
    if value:
        from kdkit.version import __version__

        print(f"kdkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show full tracebacks"),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print kdkit's version and exit")):
    _debug["on"] = debug


# --help lists the commands in this order.
for command in (runs.distill, runs.ensemble, runs.tune, runs.train, results.evaluate, runs.demo, listings.datasets,
                listings.models, listings.methods, ship.export, ship.predict, results.report, results.compare, listings.docs):
    app.command()(command)


def usage_error(error) -> str:
    """A command-line usage error (unknown command or option, a flag's missing or mistyped value)
    as one line naming the problem and where the fix is: the command's --help."""
    message = " ".join(str(error.format_message()).split())
    ctx, names = getattr(error, "ctx", None), []
    while ctx is not None and ctx.parent is not None:  # the subcommand path, without the program name
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    if getattr(error, "ctx", None) is None:  # some errors carry no context: the command named on the line
        commands = {c.name or c.callback.__name__ for c in app.registered_commands}
        names = [a for a in sys.argv[1:] if a in commands][:1]
    where = "`" + " ".join(["kdkit", *names, "--help"]) + "`"
    return f"{message} See {where}" if message.endswith("?") else f"{message.rstrip('.')}; see {where}"


def main():
    # No sys.path change: kdkit never imports from the working directory on its own (PYTHONPATH=. does).
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 prints the results, the others stay quiet
        console.quiet = True
    try:
        code = app(standalone_mode=False)  # usage errors come back as exceptions: printed below as one line
    except KdkitError as e:
        if _debug["on"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        code = 130
    except OSError as e:  # a path the file system refuses (too long, a loop, ...) that no check above caught
        if _debug["on"]:
            raise
        where = f" {shown(str(e.filename))}" if e.filename else ""
        print(f"error: cannot use{where} ({e.strerror or type(e).__name__}); check the path", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):  # not a click usage error: a bug
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # plain `kdkit`: the help was printed
            sys.exit(2)
        print(f"error: {usage_error(e)}", file=sys.stderr)
        sys.exit(2)
    if code == 130:  # Ctrl-C (typer turns KeyboardInterrupt into exit code 130)
        print("interrupted; continue with --resume (checkpoints are kept)", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
