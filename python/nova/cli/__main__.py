"""``python -m nova.cli ...``: the same command line as ``nova`` and ``python -m nova``."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
