"""``python -m dncsim ...``: the same as the ``dncsim`` command."""
import sys

from dncsim.simulator.cli import main

sys.exit(main())
