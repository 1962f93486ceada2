"""``python -m pipeline``: see :mod:`pipeline.cli`."""

import sys

from . import cli

if "batch" not in cli.COMMAND_MODULES:  # the batch command (pipeline/cli/batch.py)
    cli.COMMAND_MODULES = (*cli.COMMAND_MODULES, "batch")

sys.exit(cli.main())
