"""`python -m simulators --residents 5 --speed 60 --duration 30`: `trygg simulate` alone."""

from simulators.cli import main

main()
