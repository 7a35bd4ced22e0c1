"""`python -m kdkit ...` (also what torchrun launches)."""
import os
import sys

# `python -m` puts the working directory first on sys.path. kdkit never imports from it on its own
# (the `kdkit` script does not either): a model hook module there needs PYTHONPATH=.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from kdkit.cli import main  # noqa: E402

main()
