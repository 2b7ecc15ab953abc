"""`python -m hda.runtime COMMAND`: the same commands as `hda`, for child processes."""

from hda.cli import main

main()
