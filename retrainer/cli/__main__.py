"""`python -m retrainer.cli`: the same as the `retrainer` command."""

from retrainer.cli import main

main()
