"""`python -m mincap.cli`."""

import sys

from mincap.cli import main

sys.exit(main())
