"""`python -m kdkit ...` (also what torchrun launches)."""
from kdkit.cli import main

main()
