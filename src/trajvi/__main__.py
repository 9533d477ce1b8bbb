"""``python -m trajvi``: the same as the ``trajvi`` command."""

import sys

from trajvi.cli import main

sys.exit(main())
