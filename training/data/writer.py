"""Writing a dataset folder atomically: samples in, stacked chip shards + manifest out."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.model.bundle_spec import PROVENANCES
from engine.model.contract import Modality

from .format import (
    CHIP_MODALITIES,
    INFO_FILE,
    MANIFEST,
    SCHEMA,
    SPLITS,
    DatasetFormatError,
    DatasetInfo,
    check_chip,
)


@dataclass
class SampleRecord:
    """One sample to write. Chips are arrays; absent modalities stay empty."""

    sample_id: str  # unique in the dataset
    lat: float  # WGS84 degrees of the chip centre / photo position
    lon: float
    area_id: str  # the source area, used for area splits and reports
    split: str | None = "train"  # train | val | test | None (excluded, e.g. split buffer)
    gsd_m: float = 0.0  # aerial/DSM ground sample distance in metres (0: no raster)
    aerial: list[np.ndarray] = field(default_factory=list)  # views [C, H, W] (e.g. dates)
    streetview: list[np.ndarray] = field(default_factory=list)  # views [3, H, W]
    dsm: np.ndarray | None = None  # [1, H, W] float32 metres
    text: list[str] = field(default_factory=list)  # several phrasings of one description
    provenance: dict[str, str] = field(default_factory=dict)  # modality value -> provenance
    landuse: int = -1  # land-use class index, -1 unknown
    landuse_provenance: str | None = None  # provenance of the label
    sensor: str | None = None  # key in engine/sensors.json of the aerial chips
    aerial_bands: tuple[str, ...] | None = None  # model bands in each aerial chip (None: all)
    aerial_dates: list[str] = field(default_factory=list)  # acquisition date per aerial view
    groups: list[str] = field(default_factory=list)  # labelled polygons the chip touches


class DatasetWriter:
    """Write samples into a new dataset folder; the folder appears only when :meth:`close` runs.

    Chips are buffered per (modality, dtype, shape) and written as stacked ``.npy`` shards of
    ``shard_size`` chips; manifest rows are written as parquet row groups of the same size.
    Everything goes into a hidden temporary sibling folder that replaces ``out_dir`` at the end,
    so a failed or interrupted build leaves no partial dataset behind. Use it as a context
    manager: an exception aborts the build.
    """

    def __init__(
        self, out_dir: str | Path, name: str, *, shard_size: int = 256, overwrite: bool = False
    ) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not overwrite:
            raise DatasetFormatError(
                f"{self.out_dir} already exists; choose another folder or pass overwrite"
            )
        if shard_size < 1:
            raise DatasetFormatError("shard_size must be >= 1")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", dir=self.out_dir.parent))
        self.name, self.shard_size = name, shard_size
        self._buffers: dict[tuple, tuple[str, list[np.ndarray]]] = {}
        self._shard_no: Counter[str] = Counter()
        self._rows: list[dict[str, Any]] = []
        self._pq: pq.ParquetWriter | None = None
        self._ids: set[str] = set()
        self._stats: dict[str, Counter] = {k: Counter() for k in ("area", "split", "landuse")}
        self._prov: dict[str, Counter] = {m.value: Counter() for m in Modality}
        self._shapes: dict[str, set[tuple[int, int]]] = {}
        self._gsd: dict[str, float] = {}
        self.aerial_bands_seen: set[str] = set()  # union of the samples' aerial_bands
        self.closed = False

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.closed:
            self.abort()

    # -- adding samples ---------------------------------------------------------------------
    def add(self, s: SampleRecord) -> None:
        """Check one sample and queue its chips and manifest row."""
        where = f"sample {s.sample_id!r}"
        self._check_meta(s, where)
        row: dict[str, Any] = {
            "sample_id": s.sample_id,
            "lat": float(s.lat),
            "lon": float(s.lon),
            "area_id": s.area_id,
            "split": s.split,
            "gsd_m": float(s.gsd_m),
            "landuse": int(s.landuse),
            "landuse_provenance": s.landuse_provenance if s.landuse >= 0 else None,
            "text": [t for t in s.text if t.strip()],
            "sensor": s.sensor if s.aerial else None,
            "aerial_bands": list(s.aerial_bands) if s.aerial and s.aerial_bands else None,
            "aerial_dates": list(s.aerial_dates) if s.aerial and s.aerial_dates else None,
            "groups": list(s.groups) or None,
        }
        if row["aerial_bands"]:
            self.aerial_bands_seen.update(row["aerial_bands"])
        for m in CHIP_MODALITIES:
            views = getattr(s, m.value)
            views = [] if views is None else [views] if isinstance(views, np.ndarray) else views
            refs = [self._queue_chip(m, check_chip(m, v, where)) for v in views]
            row[m.value] = refs if m is not Modality.DSM else (refs[0] if refs else None)
        for m in Modality:
            present = m is Modality.GPS or bool(row.get(m.value))
            row[f"{m.value}_provenance"] = s.provenance.get(m.value) if present else None
            if present:
                self._prov[m.value][row[f"{m.value}_provenance"]] += 1
        self._ids.add(s.sample_id)
        self._stats["area"][s.area_id] += 1
        self._stats["split"][str(s.split)] += 1
        self._gsd.setdefault(s.area_id, float(s.gsd_m))
        self._rows.append(row)
        if len(self._rows) >= self.shard_size:
            self._flush_rows()

    def _check_meta(self, s: SampleRecord, where: str) -> None:
        if self.closed:
            raise DatasetFormatError("the dataset writer is already closed")
        if not s.sample_id or s.sample_id in self._ids:
            raise DatasetFormatError(f"{where}: sample ids must be unique and non-empty")
        if not (math.isfinite(s.lat) and math.isfinite(s.lon)):
            raise DatasetFormatError(f"{where}: lat/lon must be finite numbers")
        if not (-90 <= s.lat <= 90 and -180 <= s.lon <= 180):
            raise DatasetFormatError(f"{where}: ({s.lat}, {s.lon}) is not a WGS84 lat/lon")
        if s.split is not None and s.split not in SPLITS:
            raise DatasetFormatError(f"{where}: split must be one of {SPLITS} or None")
        present = {m.value for m in CHIP_MODALITIES if _has(getattr(s, m.value))}
        present |= {"gps"} | ({"text"} if any(t.strip() for t in s.text) else set())
        for m in present:
            if s.provenance.get(m) not in PROVENANCES:
                raise DatasetFormatError(
                    f"{where}: {m} needs a provenance in {PROVENANCES}, got {s.provenance.get(m)!r}"
                )
        if s.landuse >= 0 and s.landuse_provenance not in PROVENANCES:
            raise DatasetFormatError(f"{where}: a land-use label needs its provenance")
        views = [s.aerial] if isinstance(s.aerial, np.ndarray) else s.aerial
        if s.aerial_bands and any(len(s.aerial_bands) != v.shape[0] for v in views):
            raise DatasetFormatError(
                f"{where}: aerial_bands names {len(s.aerial_bands)} band(s) but a chip has "
                f"{[v.shape[0] for v in views]}"
            )
        if s.aerial_dates and len(s.aerial_dates) != len(views):
            raise DatasetFormatError(f"{where}: give one aerial date per aerial view (or none)")

    def _queue_chip(self, m: Modality, arr: np.ndarray) -> str:
        key = (m.value, arr.dtype.str, arr.shape)
        if key not in self._buffers:
            n = self._shard_no[m.value]
            self._shard_no[m.value] += 1
            self._buffers[key] = (f"{m.value}/s{n:05d}.npy", [])
        rel, buf = self._buffers[key]
        buf.append(arr)
        self._shapes.setdefault(m.value, set()).add((int(arr.shape[1]), int(arr.shape[2])))
        ref = f"{rel}#{len(buf) - 1}"
        if len(buf) >= self.shard_size:
            self._flush_chips(key)
        return ref

    def _flush_chips(self, key: tuple) -> None:
        rel, buf = self._buffers.pop(key)
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.stack(buf))

    def _flush_rows(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=SCHEMA)
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.tmp / MANIFEST, SCHEMA, compression="zstd")
        self._pq.write_table(table, row_group_size=self.shard_size)
        self._rows = []

    # -- finishing --------------------------------------------------------------------------
    def close(self, **info: Any) -> DatasetInfo:
        """Write the last shards, the manifest and ``dataset.json``; publish the folder.

        Args:
            **info: extra :class:`DatasetInfo` fields (bands, class_names, sources, ...).
        """
        if not self._ids:
            self.abort()
            raise DatasetFormatError(
                f"no samples were written to {self.out_dir}: check the inputs and filters"
            )
        for key in list(self._buffers):
            self._flush_chips(key)
        self._flush_rows()
        assert self._pq is not None
        self._pq.close()
        meta = DatasetInfo(
            name=self.name,
            n_samples=len(self._ids),
            chip_sizes={k: [list(hw) for hw in sorted(v)] for k, v in self._shapes.items()},
            gsd_m={k: v for k, v in self._gsd.items() if v > 0},
            provenance={k: dict(v) for k, v in self._prov.items() if v},
            areas=dict(self._stats["area"]),
            splits=dict(self._stats["split"]),
            **info,
        )
        (self.tmp / INFO_FILE).write_text(meta.to_json(), encoding="utf-8")
        self._publish()
        self.closed = True
        return meta

    def _publish(self) -> None:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes it private (0700)
        old = None
        if self.out_dir.exists():
            old = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
            os.replace(self.out_dir, old)
        os.replace(self.tmp, self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far (no partial dataset is left behind)."""
        if self._pq is not None:
            self._pq.close()
            self._pq = None
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.closed = True


def _has(v: Any) -> bool:
    if v is None:
        return False
    return isinstance(v, np.ndarray) or len(v) > 0
