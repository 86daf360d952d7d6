"""`python -m havoc ...`: the `havoc` command line; `python -m havoc "PROMPT"` is `havoc ask "PROMPT"`."""

import sys

from havoc.cli import main

sys.exit(main())
