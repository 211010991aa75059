"""``python -m tether.netem``: see ``tether.netem.cli``."""

import sys

from tether.netem.cli import main

sys.exit(main())
