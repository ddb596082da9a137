"""One loaded model per (bundle, provider, threads) for the whole QGIS process.

Loading a bundle validates every file and creating onnxruntime sessions costs seconds, so the
map tools, docks and Processing algorithms share models through :func:`get_model`. The plugin
calls :func:`release_all` on unload so that no session outlives it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..engine import pipeline
from .settings import Settings

_lock = threading.Lock()
_models: dict[tuple[str, str | None, int | None], Any] = {}  # UniGeoModel


def get_model(
    bundle: str | Path | None = None, provider: str | None = None, threads: int | None = None
) -> Any:
    """The shared model for a bundle folder, provider and thread count (defaults: the settings).

    Args:
        bundle: bundle folder; None = the settings' bundle.
        provider: "auto", "cpu", "cuda" or "tensorrt"; None = the settings' provider.
        threads: CPU threads (0 or None = the settings' value, where 0 means automatic).

    Raises:
        engine.errors.ModelContractError: the bundle is missing or invalid.
        engine.errors.ProviderUnavailableError: a pinned provider is not available.
    """
    s = Settings.load()
    folder = str(Path(bundle or s.bundle_path()).resolve())
    prov = provider if provider is not None else s.provider
    prov = None if prov in (None, "", "auto") else prov
    n = threads if threads else s.threads_arg()
    key = (folder, prov, n)
    with _lock:
        model = _models.get(key)
        if model is None:
            model = pipeline.load_model(folder, prov, n)
            _models[key] = model
        return model


def loaded_models() -> list[Any]:
    """The models currently held (for a device badge or an about box)."""
    with _lock:
        return list(_models.values())


def release_all() -> None:
    """Close every cached model and its sessions (call on plugin unload)."""
    with _lock:
        models = list(_models.values())
        _models.clear()
    for m in models:
        m.close()
