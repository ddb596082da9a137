"""Where model bundles come from and where they live: the pinned default bundle and models folders.

The plugin zip carries no model (the official QGIS repository refuses zips over 25 MB); the
default bundle is a separate zip whose URL, sha256 and size are pinned here. ``make package``
builds that zip reproducibly (``python -m engine models pack``), and a test checks that packing
``resources/models/default`` gives exactly the pinned sha256, so a rebuilt model cannot ship with a
stale pin. Installed bundles live outside the plugin folder, in
``<QGIS profile>/unigeo/models/<name>-<version>``, so updating the plugin keeps them.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR_ENV = "UNIGEO_MODELS_DIR"
"""Environment variable naming the models folder (overrides the QGIS-profile default)."""

MODEL_URL_ENV = "UNIGEO_MODEL_URL"
"""Environment variable that replaces the default bundle's URL (a mirror, or a test server)."""


@dataclass(frozen=True)
class PinnedBundle:
    """A bundle zip known by URL, sha256 and size; install verifies the hash before unpacking."""

    name: str  # bundle.json "name"
    version: str  # bundle.json "version"
    url: str  # where the zip is published (https)
    sha256: str  # sha256 (hex) of the zip file
    size: int  # size of the zip file in bytes

    @property
    def file_name(self) -> str:
        """The zip's file name, as ``make package`` writes it."""
        return f"{self.name}-{self.version}.zip"

    def resolved_url(self) -> str:
        """The URL to download from: ``$UNIGEO_MODEL_URL`` when set, else :attr:`url`."""
        return os.environ.get(MODEL_URL_ENV, "").strip() or self.url

    def size_label(self) -> str:
        """The download size for buttons and messages, e.g. ``55.0 MB``."""
        return f"{self.size / 1e6:.1f} MB"


# The bundle in resources/models/default, packed by `make package` into dist/model/. Publish that
# zip at this URL (the project's release page); after rebuilding the model, update sha256 and
# size from dist/model/<file>.sha256 (tests/test_package.py fails until they agree).
DEFAULT_BUNDLE = PinnedBundle(
    name="unigeo-default",
    version="0.3.0",
    url=(
        "https://github.com/unigeo/unigeo/releases/download/"
        "model-unigeo-default-0.3.0/unigeo-default-0.3.0.zip"
    ),
    sha256="cb65d584614a433bb3366efa44ae994a67e1b1cde68532d2c2fdd484a77d3cea",
    size=55_008_681,
)


def qgis_default_profile() -> Path:
    """The default QGIS 3 profile folder of this user on this platform (it may not exist)."""
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "QGIS" / "QGIS3" / "profiles" / "default"


def models_dir_for_profile(profile: str | Path) -> Path:
    """``<profile>/unigeo/models``: where the plugin running in that QGIS profile looks."""
    return Path(profile) / "unigeo" / "models"


def default_models_dir() -> Path:
    """``$UNIGEO_MODELS_DIR`` when set, else the models folder of the default QGIS profile."""
    env = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else models_dir_for_profile(qgis_default_profile())
