"""Run the simulated tsrecorder: `python -m tests.sim.recorder.tsrecorder --dst ...`."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
