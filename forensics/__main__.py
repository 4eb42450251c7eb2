"""`python -m forensics` runs the o2f command line."""

from forensics.cli.app import main

main()
