"""``python -m pipeline``: see :mod:`pipeline.cli`."""

import sys

from . import cli

sys.exit(cli.main())
