"""``python -m ensdef``: the command line."""

import sys

from ensdef.cli import main

sys.exit(main())
