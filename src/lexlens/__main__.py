"""``python -m lexlens``."""

import sys

from lexlens.cli import main

sys.exit(main())
