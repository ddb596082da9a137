"""End-to-end raster embedding (read, preprocess, infer, store) vs pure inference, same run.

``embed_raster`` with the shipped bundle runs over a real NAIP scene (``../shared/data``, next to
the repository) and over mosaics made from it at 2x2, 3x3, ... the area, for the scaling curve;
pure inference is ``model.encode_tiles`` on the same tiles, pre-loaded. A generated raster stands
in when the shared data are absent. ``e2e_old_s`` / ``old/infer`` time the same job through the
previous release's read path (tile by tile, always through GDAL's warper) in the same
interleaved runs, so old and new face the same machine load.

    .venv/bin/python bench/embed_e2e.py --scales 1 2 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

try:
    from .common import ROOT, time_fn, time_interleaved
except ImportError:  # run as a script
    from common import ROOT, time_fn, time_interleaved  # type: ignore[no-redef]

from engine.embed.job import embed_raster
from engine.model import UniGeoModel
from engine.model.contract import Modality
from engine.raster.batch import read_chips
from engine.raster.gdal_reader import GdalReader
from engine.raster.layout import BandLayout, band_layout, optional_bands
from engine.raster.tiling import grid_for_raster

DEFAULT_BUNDLE = ROOT / "resources" / "models" / "default"
NAIP = ROOT.parent / "shared" / "data" / "naip_north_dakota" / "m_4709963_se_14_1_20190904.tif"


def mosaic_raster(src_path: Path | None, dst: Path, scale: int, size: int = 720) -> Path:
    """Write ``src`` repeated ``scale`` x ``scale`` times (mirrored, so there are no seams).

    Without a source, a ``size``-px 4-band uint8 raster of smooth random texture (EPSG:32614,
    5 m) is the unit instead.
    """
    import rasterio
    from affine import Affine

    if src_path is not None and src_path.is_file():
        with rasterio.open(src_path) as src:
            unit, crs, t = src.read(), src.crs, src.transform
    else:
        rng = np.random.default_rng(0)
        coarse = rng.integers(1, 255, (4, size // 16, size // 16)).astype(np.uint8)
        unit = np.kron(coarse, np.ones((1, 16, 16), np.uint8))
        crs, t = "EPSG:32614", Affine(5.0, 0, 500_000.0, 0, -5.0, 5_200_000.0)
    row = np.concatenate([unit if j % 2 == 0 else unit[:, :, ::-1] for j in range(scale)], 2)
    data = np.concatenate([row if i % 2 == 0 else row[:, ::-1, :] for i in range(scale)], 1)
    profile = dict(
        driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
        dtype="uint8", crs=crs, transform=t, tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", photometric="MINISBLACK",
    )  # fmt: skip
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        out.descriptions = ("red", "green", "blue", "nir")[: data.shape[0]]
    return dst


def preload_chips(reader: Any, grid: Any, bands: BandLayout) -> np.ndarray:
    """Every tile of ``grid`` as float32 chips, the usable ones only (as embed_raster keeps).

    Read as embed_raster reads them (``read_chips``: one window per row of a block, bands the
    raster lacks as NaN planes for an encoder that masks them).
    """
    cells = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    parts = [read_chips(reader, grid, bands, cells[k : k + 32]) for k in range(0, len(cells), 32)]
    chips = np.concatenate([p[0] for p in parts])
    nodata = np.concatenate([p[1] for p in parts])
    return chips[(nodata <= 0.5) & (nodata < 1.0)]


class TileOnlyReader:
    """The reader of the previous release: tile-by-tile reads, every one through the warper.

    It hides ``read_window`` (so ``read_batch`` falls back to ``read_tile``, as for the
    plugin's QGIS-layer reader) and never skips GDAL's warper.
    """

    def __init__(self, path: Path) -> None:
        self._r = GdalReader(path, fast=False)

    def __getattr__(self, name: str) -> Any:
        if name == "read_window":
            raise AttributeError(name)
        return getattr(self._r, name)


def bench_raster(
    model: UniGeoModel,
    raster: Path,
    workdir: Path,
    repeats: int = 3,
    batch_size: int = 32,
    workers: int | None = None,
    old_path: bool = False,
) -> dict[str, Any]:
    """Median e2e and pure-inference time on one raster; figures per tile and per km².

    Each e2e run opens the raster afresh, as a job does (a reused reader would serve warped
    blocks from its cache). ``old_path`` also times the previous release's read path.
    """
    spec = model.spec(Modality.AERIAL)
    with GdalReader(raster) as reader:
        wanted = tuple(spec.preprocess.bands)
        bands = band_layout(reader, wanted, optional_bands(spec.inputs, wanted))
        grid = grid_for_raster(reader, spec.preprocess)
        chips = preload_chips(reader, grid, bands)

    def read() -> None:
        with GdalReader(raster) as fresh:
            preload_chips(fresh, grid, bands)

    t_read = time_fn(read, 0, 1)
    x0, y0, x1, y1 = grid.cell_bounds(0, 0)
    km2 = grid.n_tiles * (x1 - x0) * (y1 - y0) / 1e6
    store_path = workdir / "store"
    meta: dict[str, Any] = {}

    def e2e(make: Any = GdalReader, n: int | None = workers) -> None:
        shutil.rmtree(store_path, ignore_errors=True)
        rd = make(raster)
        st = embed_raster(
            model, rd, grid, store_path, batch_size=batch_size, workers=n, resume=False
        )
        rd.close()
        if make is GdalReader:  # the figures (readers chosen, io wait) of the new path
            meta.update(st.meta)

    def infer() -> None:
        model.encode_tiles(Modality.AERIAL, chips, batch_size)

    fns = {"e2e": e2e, "infer": infer}
    if old_path:
        fns["old"] = lambda: e2e(TileOnlyReader, 2)  # the previous release: 2 readers
    t = time_interleaved(fns, 1, repeats)
    t_e2e, t_inf = t["e2e"], t["infer"]
    shutil.rmtree(store_path, ignore_errors=True)
    row = {
        "raster_px": _raster_px(raster),
        "tiles": grid.n_tiles,
        "encoded": len(chips),
        "km2": km2,
        "e2e_s": t_e2e.median,
        "infer_s": t_inf.median,
        "e2e_km2_per_s": km2 / t_e2e.median,
        "infer_km2_per_s": km2 / t_inf.median,
        "read_s": t_read.median,
        "e2e_tiles_per_s": t_e2e.rate(grid.n_tiles),
        "e2e/infer": t_inf.median / t_e2e.median,
        "io_wait_s": meta.get("io_wait_s"),
        "workers": meta.get("workers"),
    }
    if old_path:
        row.update({"e2e_old_s": t["old"].median, "old/infer": t_inf.median / t["old"].median})
    return row


def _raster_px(path: Path) -> str:
    import rasterio

    with rasterio.open(path) as src:
        return f"{src.width}x{src.height}x{src.count}"


def run(
    scales: list[int] | None = None, bundle: Path = DEFAULT_BUNDLE, source: Path | None = NAIP,
    repeats: int = 3, threads: int = 2, workdir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Benchmark ``embed_raster`` on mosaics of ``source`` at each scale (1 = the scene itself)."""
    scales = scales or [1, 2, 3, 4]
    model = UniGeoModel.load(bundle, providers="cpu", threads=threads)
    real = source is not None and source.is_file()
    rows = []
    with tempfile.TemporaryDirectory(prefix="unigeo-bench-e2e-", dir=workdir) as tmp:
        for s in scales:
            tif = Path(tmp) / f"mosaic_{s}.tif"
            if s == 1 and real:
                tif = source
            else:
                mosaic_raster(source if real else None, tif, s)
            rows.append({"scale": s, **bench_raster(model, tif, Path(tmp), repeats, old_path=True)})
    prov = model.provider_report()
    model.close()
    src = f"NAIP {source.name} (real)" if real else "generated texture raster"
    return {"rows": rows, "source": src, "bundle": bundle.name, "provider": str(prov)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(run(a.scales, a.bundle, NAIP, a.repeats, a.threads), indent=1, default=str))


if __name__ == "__main__":
    main()
