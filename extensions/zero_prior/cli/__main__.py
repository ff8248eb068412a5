"""Allow ``python -m zero_prior.cli``."""

import sys

from . import main

sys.exit(main())
