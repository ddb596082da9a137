"""The on-disk dataset format: ``samples.parquet`` + sharded chip arrays + ``dataset.json``.

A dataset is one folder::

    dataset.json            name, version, bands, chip sizes, GSD, classes, provenance summary
    samples.parquet         one row per sample (row groups of ``shard_size`` rows)
    aerial/s00000.npy       stacked chips [N, C, H, W] (uint8 0..255 or float16/float32 in [0, 1])
    streetview/s00000.npy   stacked chips [N, 3, H, W]
    dsm/s00000.npy          stacked chips [N, 1, H, W] float32 metres (NaN = nodata)

Each chip is referenced from the manifest as ``"<folder>/<file>.npy#<row>"`` (a whole-file
chip without ``#row`` is accepted too). Stacked shards keep the file count small and can be
memory-mapped, so datasets larger than memory read fine. Every reference is checked to stay
inside the dataset folder: absolute paths and ``..`` are refused.

Columns of ``samples.parquet``: ``sample_id``, ``lat``, ``lon``, ``area_id``, ``split``
('train' | 'val' | 'test' | 'holdout' | null), ``gsd_m``, ``landuse`` (-1 unknown),
``landuse_provenance``, ``aerial`` / ``streetview`` (lists of chip references: several entries
are extra positive views, e.g. other dates or shifted crops), ``dsm`` (one reference or null),
``text`` (list of phrasings) and ``<modality>_provenance`` ('real' | 'derived' | 'synthetic',
null when absent) for the five modalities.

Format version 2 adds (absent from version 1 manifests, which stay readable): ``sensor`` (key
in ``engine/sensors.json`` of the aerial chips), ``aerial_bands`` (the model bands stored in
this sample's aerial chips, in model order; the reader expands chips to the dataset's band list
with NaN for the others; null: the chips hold the dataset's bands), ``aerial_dates`` (one
acquisition date per aerial view, "" unknown) and ``groups`` (ids of the labelled polygons a
chip touches: no group spans two splits). Split 'holdout' marks an area kept out of training
and validation entirely (for zero- and few-shot evaluation).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import InputError
from engine.model.bundle_spec import PROVENANCES
from engine.model.contract import Modality

FORMAT_VERSION = 2
MANIFEST = "samples.parquet"
INFO_FILE = "dataset.json"
IMAGE_MODALITIES = (Modality.AERIAL, Modality.STREETVIEW)
CHIP_MODALITIES = (Modality.AERIAL, Modality.STREETVIEW, Modality.DSM)
SPLITS = ("train", "val", "test", "holdout")

SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("area_id", pa.string()),
        ("split", pa.string()),
        ("gsd_m", pa.float32()),
        ("landuse", pa.int16()),
        ("landuse_provenance", pa.string()),
        ("aerial", pa.list_(pa.string())),
        ("aerial_provenance", pa.string()),
        ("streetview", pa.list_(pa.string())),
        ("streetview_provenance", pa.string()),
        ("dsm", pa.string()),
        ("dsm_provenance", pa.string()),
        ("text", pa.list_(pa.string())),
        ("text_provenance", pa.string()),
        ("gps_provenance", pa.string()),
        ("sensor", pa.string()),
        ("aerial_bands", pa.list_(pa.string())),
        ("aerial_dates", pa.list_(pa.string())),
        ("groups", pa.list_(pa.string())),
    ]
)
V2_COLUMNS = ("sensor", "aerial_bands", "aerial_dates", "groups")  # optional in version 1 data
REF_COLUMNS = ("aerial", "streetview", "dsm")
_REF_RE = re.compile(r"^(?P<path>[^#]+?)(?:#(?P<row>\d+))?$")


class DatasetFormatError(InputError):
    """A dataset folder, manifest or chip breaks the dataset format."""


@dataclass(frozen=True)
class ChipRef:
    """A parsed chip reference: a file inside the dataset and an optional row in it."""

    path: str  # POSIX path relative to the dataset root
    row: int | None  # row in a stacked shard, None for a whole-file chip


def parse_ref(ref: str) -> ChipRef:
    """Parse and check a chip reference; refuse anything that could leave the dataset folder.

    Raises:
        DatasetFormatError: the reference is absolute, holds ``..``, a backslash or a drive.
    """
    m = _REF_RE.match(ref or "")
    if not m:
        raise DatasetFormatError(f"chip reference {ref!r} is not '<folder>/<file>.npy[#row]'")
    path = m.group("path")
    p = PurePosixPath(path)
    if (
        p.is_absolute()
        or "\\" in path
        or re.match(r"^[A-Za-z]:", path)
        or any(part in ("..", "") for part in path.split("/"))
        or not path.endswith((".npy", ".npz"))
    ):
        raise DatasetFormatError(
            f"chip reference {ref!r} escapes the dataset folder or is not a .npy/.npz file; "
            "references must be relative paths inside the dataset (no '/', '..' or drive at "
            "the start)"
        )
    row = m.group("row")
    return ChipRef(path, int(row) if row is not None else None)


def resolve_ref(root: Path, ref: str) -> tuple[Path, int | None]:
    """Return the absolute file and row of ``ref``, checking that it stays inside ``root``."""
    cr = parse_ref(ref)
    full = (root / cr.path).resolve()
    if not full.is_relative_to(root.resolve()):
        raise DatasetFormatError(f"chip reference {ref!r} points outside the dataset (symlink?)")
    return full, cr.row


@dataclass
class DatasetInfo:
    """The contents of ``dataset.json``."""

    name: str  # dataset name
    version: str = "1"  # dataset version
    format_version: int = FORMAT_VERSION  # version of this on-disk format
    n_samples: int = 0  # rows in samples.parquet
    bands: dict[str, list[str]] = field(default_factory=dict)  # modality -> band names
    chip_sizes: dict[str, list[list[int]]] = field(default_factory=dict)  # modality -> [[H, W]]
    gsd_m: dict[str, float] = field(default_factory=dict)  # area_id -> aerial/DSM GSD (m)
    area_info: dict[str, dict] = field(default_factory=dict)  # area_id -> place, sensor, dates..
    reserved: dict[str, list[float]] = field(default_factory=dict)  # name -> WGS84 box no chip
    # of another split meets (held-out areas, the demo scene)
    class_names: list[str] = field(default_factory=list)  # landuse index -> name
    provenance: dict[str, dict[str, int]] = field(default_factory=dict)  # modality -> counts
    areas: dict[str, int] = field(default_factory=dict)  # area_id -> sample count
    splits: dict[str, int] = field(default_factory=dict)  # split -> sample count
    sources: list[dict[str, str]] = field(default_factory=list)  # name, licence, what
    description: str = ""  # free text

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def read(cls, root: str | Path) -> DatasetInfo:
        """Read and check ``dataset.json`` in ``root``."""
        path = Path(root) / INFO_FILE
        if not path.is_file():
            raise DatasetFormatError(f"no {INFO_FILE} in {root}: is this a UniGeo dataset?")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise DatasetFormatError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise DatasetFormatError(f"{path}: needs an object with a 'name'")
        fv = d.get("format_version")
        if not isinstance(fv, int) or not 1 <= fv <= FORMAT_VERSION:
            raise DatasetFormatError(
                f"{path}: format version {fv!r} is not supported (1..{FORMAT_VERSION}); "
                "rebuild the dataset with this version of training.data"
            )
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise DatasetFormatError(f"{path}: unknown fields {sorted(unknown)}")
        return cls(**d)


def check_chip(modality: Modality, arr: np.ndarray, where: str) -> np.ndarray:
    """Check a chip's shape, dtype and value range; return it as a contiguous array.

    Images are [C, H, W] uint8 or float in [0, 1] (NaN = nodata), street views have 3 bands,
    DSMs are [1, H, W] float32 metres.
    """
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or min(arr.shape) < 1:
        raise DatasetFormatError(f"{where}: {modality.value} chip must be a [C, H, W] array")
    if modality is Modality.DSM:
        if arr.shape[0] != 1:
            raise DatasetFormatError(f"{where}: DSM chip must have 1 band, got {arr.shape[0]}")
        return np.ascontiguousarray(arr, dtype=np.float32)
    if modality is Modality.STREETVIEW and arr.shape[0] != 3:
        raise DatasetFormatError(f"{where}: street view must have 3 bands, got {arr.shape[0]}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise DatasetFormatError(f"{where}: {modality.value} chip has dtype {arr.dtype}")
    finite = arr[np.isfinite(arr)]
    if finite.size and (finite.min() < -1e-3 or finite.max() > 1 + 1e-3):
        raise DatasetFormatError(f"{where}: {modality.value} values must be in [0, 1]")
    return np.ascontiguousarray(np.clip(arr, 0, 1), dtype=np.float16)


def chip_to_float(arr: np.ndarray) -> np.ndarray:
    """Convert a stored image chip (uint8 or float) to float32 in [0, 1]."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    return np.asarray(arr, dtype=np.float32)


def read_manifest(root: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read ``samples.parquet`` and validate every chip reference in it.

    Raises:
        DatasetFormatError: missing manifest, wrong columns, or a reference escaping ``root``.
    """
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetFormatError(f"no {MANIFEST} in {root}: is this a UniGeo dataset?")
    try:
        table = pq.read_table(path, columns=columns)
        # A corrupt file can still parse but hold undecodable names or values (found by fuzzing).
        check_table(table, str(path), require_all=columns is None)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DatasetFormatError(f"{path}: not a readable parquet manifest ({e})") from None
    return table


def check_table(table: pa.Table, where: str, require_all: bool = True) -> None:
    """Check the columns of a manifest (or a row group of it) and all its chip references.

    Args:
        table: the manifest or part of it.
        where: file name for error messages.
        require_all: every column of :data:`SCHEMA` must be there (False for column subsets).
    """
    have = set(table.column_names)
    missing = [n for n in SCHEMA.names if n not in have and n not in V2_COLUMNS]
    if "sample_id" not in have or (require_all and missing):
        raise DatasetFormatError(
            f"{where}: missing columns {missing or ['sample_id']}; rebuild the dataset"
        )
    for name in REF_COLUMNS:
        if name not in have:
            continue
        for v in table.column(name).to_pylist():
            for ref in v if isinstance(v, list) else [] if v is None else [v]:
                parse_ref(ref)
    if "split" in have:
        bad = set(table.column("split").to_pylist()) - set(SPLITS) - {None}
        if bad:
            raise DatasetFormatError(f"{where}: unknown split names {sorted(bad)}")
    for m in Modality:
        col = f"{m.value}_provenance"
        if col in have:
            bad = set(table.column(col).to_pylist()) - set(PROVENANCES) - {None}
            if bad:
                raise DatasetFormatError(f"{where}: unknown provenance values {sorted(bad)}")
