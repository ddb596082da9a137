"""User settings of the plugin (QgsSettings under ``unigeo/``) as one typed dataclass.

Other modules read settings with ``Settings.load()`` and never touch QgsSettings keys
themselves, so the keys and defaults live in this file only. An empty string or 0 stored for a
folder or a number means "use the default", which keeps the defaults tied to the running QGIS
profile and project instead of freezing them at first save.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsSettings

PREFIX = "unigeo/"
PLUGIN_DIR = Path(__file__).resolve().parent.parent
PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")


def default_bundle() -> str:
    """The model bundle shipped with the plugin: ``<plugin>/resources/models/default``."""
    return str(PLUGIN_DIR / "resources" / "models" / "default")


def default_cache_folder() -> str:
    """``<QGIS settings dir>/unigeo/cache`` of the running profile."""
    return str(Path(QgsApplication.qgisSettingsDirPath()) / "unigeo" / "cache")


@dataclass
class Settings:
    """Every UniGeo setting, with its default; ``load()`` reads them, ``save()`` writes them."""

    bundle: str = ""  # model bundle folder; "" = the bundled default model
    provider: str = "auto"  # onnxruntime provider: auto, cpu, cuda or tensorrt
    threads: int = 0  # CPU inference threads; 0 = onnxruntime's choice (all cores)
    stride_px: int = 0  # step between tiles in pixels; 0 = the tile size (no overlap)
    cache_folder: str = ""  # embedding-store cache; "" = <QGIS settings dir>/unigeo/cache
    cache_mb: int = 2048  # size cap of the cache in MB (least recently used stores go first)
    output_folder: str = ""  # where outputs go; "" = the project folder, else <cache>/outputs

    @classmethod
    def load(cls) -> Settings:
        """Read the settings; a missing or unreadable value falls back to its default."""
        s = QgsSettings()
        out = cls()
        for f in fields(cls):
            default = getattr(out, f.name)
            raw = s.value(PREFIX + f.name, default)
            setattr(out, f.name, _coerce(raw, default))
        if out.provider not in PROVIDERS:
            out.provider = "auto"
        return out

    def save(self) -> None:
        """Write every setting under ``unigeo/``."""
        s = QgsSettings()
        for f in fields(self):
            s.setValue(PREFIX + f.name, getattr(self, f.name))

    # -- resolved values (defaults applied) -------------------------------------------------
    def bundle_path(self) -> str:
        """The model bundle folder to load."""
        return self.bundle or default_bundle()

    def provider_arg(self) -> str | None:
        """The ``providers`` argument of ``UniGeoModel.load`` (None = auto)."""
        return None if self.provider == "auto" else self.provider

    def threads_arg(self) -> int | None:
        """The ``threads`` argument of ``UniGeoModel.load`` (None = auto)."""
        return self.threads if self.threads > 0 else None

    def stride_arg(self) -> int | None:
        """The ``stride_px`` argument of ``grid_for_raster`` (None = the tile size)."""
        return self.stride_px if self.stride_px > 0 else None

    def cache_path(self) -> Path:
        """The embedding-store cache folder."""
        return Path(self.cache_folder or default_cache_folder())

    def cache_bytes(self) -> int:
        """The cache size cap in bytes."""
        return max(int(self.cache_mb), 1) * 1024 * 1024

    def output_path(self) -> Path:
        """The output folder: the setting, else the project folder, else ``<cache>/outputs``."""
        if self.output_folder:
            return Path(self.output_folder)
        home = QgsProject.instance().absolutePath()
        return Path(home) if home else self.cache_path() / "outputs"


def _coerce(raw: object, default: object) -> object:
    """QgsSettings returns strings from some back ends: convert to the default's type."""
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            return int(raw)
        except (TypeError, ValueError):
            return default
    return "" if raw is None else str(raw)
