"""``python -m fastca``: same as the ``fastca`` console script."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a worker process re-imports the main module
    sys.exit(main())
