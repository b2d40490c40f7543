"""Allow `python -m tsops`."""

from tsops.cli.app import main

main()
