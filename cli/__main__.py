"""`python -m aelstm.cli`: the `aelstm` command where no console script is on the PATH."""

from aelstm.cli import main

main()
