"""``python -m driftserve``: the same command as the ``driftserve`` entry point."""

import sys

from driftserve.cli import main

sys.exit(main())
