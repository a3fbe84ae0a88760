"""``python -m confessional``: the same command as the ``confessional`` console script."""

from __future__ import annotations

import sys

from confessional.cli import main

sys.exit(main())
