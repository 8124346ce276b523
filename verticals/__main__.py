"""`python -m verticals ...` is the same as `verticals ...`."""

from verticals.cli import main

main()
