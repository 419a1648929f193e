"""``python -m fastca``: same as the ``fastca`` console script."""

import sys

from .cli import main

sys.exit(main())
