"""``python -m pamd``."""

import sys

from pamd.cli import main

sys.exit(main())
