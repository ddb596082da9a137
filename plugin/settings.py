"""User settings of the plugin (QgsSettings under ``unigeo/``) as one typed dataclass.

It also says which model bundle to load (:meth:`Settings.resolve_bundle`): the folder set in
Settings, else the active bundle of the model manager (``<QGIS profile>/unigeo/models``), else the
bundle shipped inside the plugin folder (the checkout and the offline zip); with none of them,
:meth:`Settings.bundle_path` raises the first-run message that says how to install the default.

It also says where outputs go: :meth:`Settings.output_path` picks the folder (never inside the
store cache, which deletes old stores when full) and :func:`reserve_output` claims a unique
file name in it.

Other modules read settings with ``Settings.load()`` and never touch QgsSettings keys
themselves, so the keys and defaults live in this file only. An empty string or 0 stored for a
folder or a number means "use the default", which keeps the defaults tied to the running QGIS
profile and project instead of freezing them at first save.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsSettings

from ..engine.errors import InputError, ModelNotInstalledError
from ..engine.library import DEFAULT_BUNDLE, MODEL_URL_ENV, MODELS_DIR_ENV, active_bundle

PREFIX = "unigeo/"
PLUGIN_DIR = Path(__file__).resolve().parent.parent
PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")


def default_bundle() -> str:
    """The bundle shipped inside the plugin folder: ``<plugin>/resources/models/default``.

    The checkout and the offline zip have it; the zip from the QGIS repository does not.
    """
    return str(PLUGIN_DIR / "resources" / "models" / "default")


def default_models_folder() -> str:
    """``$UNIGEO_MODELS_DIR``, else ``<QGIS settings dir>/unigeo/models`` of the running profile."""
    env = os.environ.get(MODELS_DIR_ENV, "").strip()
    return env or str(Path(QgsApplication.qgisSettingsDirPath()) / "unigeo" / "models")


def first_run_message(models_folder: str | Path) -> str:
    """What to do when no model is installed: the one click, or the one command."""
    return (
        f"UniGeo has no model yet. Install the default model ({DEFAULT_BUNDLE.size_label()} "
        "download) with one click: UniGeo toolbar > Model manager > Install default model "
        "(or Processing: UniGeo > Models > Install model bundle). From a shell: python -m "
        f'engine models install --default --models-dir "{models_folder}"'
    )


def first_run_short() -> str:
    """The first-run message for the message bar, beside its *Install default model* button."""
    size = DEFAULT_BUNDLE.size_label()
    return f"UniGeo has no model yet. Install the default model ({size} download) with one click:"


def default_cache_folder() -> str:
    """``<QGIS settings dir>/unigeo/cache`` of the running profile."""
    return str(Path(QgsApplication.qgisSettingsDirPath()) / "unigeo" / "cache")


def default_output_folder() -> str:
    """``<QGIS settings dir>/unigeo/outputs``: outputs of a project that was never saved."""
    return str(Path(QgsApplication.qgisSettingsDirPath()) / "unigeo" / "outputs")


# for the settings dialog's placeholder and the docs: where outputs go when the setting is empty
OUTPUT_FOLDER_HINT = "the project folder, else <QGIS settings>/unigeo/outputs"


@dataclass
class Settings:
    """Every UniGeo setting, with its default; ``load()`` reads them, ``save()`` writes them."""

    bundle: str = ""  # model bundle folder; "" = the bundled default model
    provider: str = "auto"  # onnxruntime provider: auto, cpu, cuda or tensorrt
    threads: int = 0  # CPU inference threads; 0 = onnxruntime's choice (all cores)
    stride_px: int = 0  # step between tiles in pixels; 0 = the tile size (no overlap)
    cache_folder: str = ""  # embedding-store cache; "" = <QGIS settings dir>/unigeo/cache
    cache_mb: int = 2048  # size cap of the cache in MB (least recently used stores go first)
    # where outputs go; "" = the project folder, else <QGIS settings dir>/unigeo/outputs (never
    # inside the cache: the cache deletes old stores when it is full)
    output_folder: str = ""
    # queries skip tiles with more no data than this (percent): edges of skewed rasters, collars
    max_nodata_pct: int = 25
    models_folder: str = ""  # installed model bundles; "" = <QGIS settings dir>/unigeo/models
    model_url: str = ""  # where "Install default model" downloads; "" = the pinned release URL

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
    def resolve_bundle(self) -> str | None:
        """The bundle folder to load: the setting, the active installed one, the shipped one."""
        if self.bundle:
            return self.bundle
        active = active_bundle(self.models_path())
        if active is not None:
            return str(active)
        shipped = default_bundle()
        return shipped if (Path(shipped) / "bundle.json").is_file() else None

    def bundle_path(self) -> str:
        """The model bundle folder to load.

        Raises:
            ModelNotInstalledError: no bundle is set, installed or shipped (first run).
        """
        found = self.resolve_bundle()
        if found is None:
            raise ModelNotInstalledError(first_run_message(self.models_path()))
        return found

    def models_path(self) -> Path:
        """The folder of installed model bundles (the model manager's)."""
        return Path(self.models_folder or default_models_folder())

    def default_model_url(self) -> str:
        """The default bundle's URL: the setting, else ``$UNIGEO_MODEL_URL``, else the pin."""
        return self.model_url or os.environ.get(MODEL_URL_ENV, "").strip() or DEFAULT_BUNDLE.url

    def provider_arg(self) -> str | None:
        """The ``providers`` argument of ``UniGeoModel.load`` (None = auto)."""
        return None if self.provider == "auto" else self.provider

    def threads_arg(self) -> int | None:
        """The ``threads`` argument of ``UniGeoModel.load`` (None = auto)."""
        return self.threads if self.threads > 0 else None

    def max_nodata(self) -> float:
        """The no-data fraction above which queries skip a tile (``engine.store.window``)."""
        return min(max(self.max_nodata_pct, 0), 100) / 100.0

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
        """The output folder: the setting, else the project's folder, else the unsaved one."""
        if self.output_folder:
            return Path(self.output_folder)
        home = QgsProject.instance().absolutePath()
        return Path(home) if home else self.unsaved_output_path()

    def uses_unsaved_output_path(self) -> bool:
        """True when outputs go to :meth:`unsaved_output_path` (no folder set, project unsaved)."""
        return not self.output_folder and not QgsProject.instance().absolutePath()

    def unsaved_output_path(self) -> Path:
        """Where outputs go while the project was never saved: always outside the cache.

        ``<QGIS settings dir>/unigeo/outputs``; when the cache folder was set to that folder or
        one above it, ``<cache>-outputs`` beside the cache instead.
        """
        folder = Path(default_output_folder())
        cache = self.cache_path()
        if _inside(folder, cache):
            folder = cache.parent / f"{cache.name or 'unigeo'}-outputs"
        return folder


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies under it (links and ``..`` resolved)."""
    p, f = path.resolve(), folder.resolve()
    return p == f or f in p.parents


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe version of a query label."""
    return re.sub(r"[^\w.-]+", "_", text).strip("_.")[:limit] or "query"


def reserve_output(
    folder: Path, label: str, suffix: str = ".tif", siblings: tuple[str, ...] = ()
) -> Path:
    """Claim a new file in ``folder`` named after ``label``, e.g. ``text_lake_20260912-153001.tif``.

    The name is claimed by creating an empty file exclusively (``O_EXCL``), so two requests in
    the same second, or two QGIS sessions sharing the folder, never get the same path: later
    ones get ``_2``, ``_3``, ... Each of ``siblings`` (e.g. ``"_confidence.tif"``) is claimed
    with it as ``<stem><sibling>``. Whoever writes the file replaces the empty placeholder.

    Raises:
        InputError: ``folder`` is not writable.
    """
    stem = f"{slug(label)}_{datetime.now():%Y%m%d-%H%M%S}"
    for n in range(1, 10_000):
        name = stem if n == 1 else f"{stem}_{n}"
        paths = [folder / f"{name}{suffix}", *(folder / f"{name}{x}" for x in siblings)]
        if _claim_all(paths):
            return paths[0]
    raise InputError(f"no free file name for '{stem}' in {folder}; clean up that folder")


def _claim_all(paths: list[Path]) -> bool:
    """Create every path as an empty file, exclusively; False (and nothing left) if one exists."""
    claimed: list[Path] = []
    try:
        for p in paths:
            os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            claimed.append(p)
        return True
    except OSError as e:
        for c in claimed:
            c.unlink(missing_ok=True)
        if isinstance(e, FileExistsError):
            return False
        raise InputError(
            f"cannot write {p.name} in {p.parent} ({e.strerror or e}); choose another output "
            "folder in UniGeo Settings"
        ) from None


def _coerce(raw: object, default: object) -> object:
    """QgsSettings returns strings from some back ends: convert to the default's type."""
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            return int(raw)
        except (TypeError, ValueError):
            return default
    return "" if raw is None else str(raw)
