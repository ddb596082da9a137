"""Run inside the real QGIS (``qgis --code scripts/qgis_app_check.py``): check the installed UniGeo.

Every Processing algorithm with every kind of query, and every toolbar tool driven with real
mouse events; writes ``report.json`` (one entry per check) into UNIGEO_APP_OUT and exits QGIS with
0 (all passed) or 3 (some failed). Started by tests/qgis_app/test_real_qgis.py, which installs
the plugin into a throw-away profile first (scripts/qgis_profile.sh); the environment it reads is
described in scripts/qgis_app/main.py. QGIS runs this file through Python's exec builtin, so ``__file__`` is not
set: the scripts folder is found from UNIGEO_APP_ROOT (default: the working directory).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(os.environ.get("UNIGEO_APP_ROOT", os.getcwd())) / "scripts"))

from qgis_app import main  # noqa: E402 - after the path is set

main.start()
