"""`python -m hda` is the `hda` command."""

from hda.cli import main

main()
