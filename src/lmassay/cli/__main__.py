"""``python -m lmassay.cli``."""

from lmassay.cli import main

main()
