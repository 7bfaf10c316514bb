"""``python -m export.cli``: the ``edge-export`` command line."""

import sys

from export.cli import main

sys.exit(main())
