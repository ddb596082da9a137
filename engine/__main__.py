"""``python -m engine``: the UniGeo command-line interface (see engine/cli.py)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
