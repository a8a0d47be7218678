"""`python -m stellwerk`: the `stellwerk` command (how the server starts its own processes)."""

import sys

from stellwerk.cli import main

sys.exit(main())
