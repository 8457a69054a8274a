"""`python -m strongroom`: the same as the `strongroom` command."""

import sys

from .cli import main

sys.exit(main())
