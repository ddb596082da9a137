"""The model manager: the pinned default bundle, installing bundles, and the installed ones.

A bundle is installed from a zip file, a bundle folder or an https URL (:func:`install_bundle`:
downloaded with resume, checked against its sha256, unpacked safely, every encoder loaded once)
into a models folder, where :func:`list_bundles`, :func:`set_active` and :func:`remove_bundle`
manage it. The GUI's model manager, Processing's ``unigeo:installmodel``/``unigeo:models`` and
``python -m engine models`` all call these names.
"""

from __future__ import annotations

from .catalog import (
    DEFAULT_BUNDLE,
    MODEL_URL_ENV,
    MODELS_DIR_ENV,
    PinnedBundle,
    default_models_dir,
)
from .install import install_bundle, install_default, validate_bundle
from .installed import (
    InstalledBundle,
    active_bundle,
    find_bundle,
    human_size,
    list_bundles,
    remove_bundle,
    set_active,
)
from .unpack import pack_bundle

__all__ = [
    "DEFAULT_BUNDLE",
    "MODELS_DIR_ENV",
    "MODEL_URL_ENV",
    "InstalledBundle",
    "PinnedBundle",
    "active_bundle",
    "default_models_dir",
    "find_bundle",
    "human_size",
    "install_bundle",
    "install_default",
    "list_bundles",
    "pack_bundle",
    "remove_bundle",
    "set_active",
    "validate_bundle",
]
