"""``python -m engine``: the UniGeo command-line interface (see engine/cli/main.py)."""

from __future__ import annotations

import sys

from .cli.main import main

sys.exit(main())
