"""``python -m ensdef.cli``: the same as ``python -m ensdef``."""

import sys

from ensdef.cli import main

sys.exit(main())
