"""`python -m lapse_cli`: same as the `lapse` command."""

from lapse_cli.main import main

main()
