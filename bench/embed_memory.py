"""Peak memory and throughput of embed_raster on a large sparse GeoTIFF with an analytic encoder.

Writes a ``--size`` x ``--size`` 3-band uint8 tiled GeoTIFF (EPSG:32633, 1 m) in which only a
diagonal band of blocks holds data (the rest is sparse nodata), embeds it with 224-px tiles and
prints peak RSS, tiles/s and the store size as JSON. Target: peak RSS < 1.5 GB.

    .venv/bin/python bench/embed_memory.py --size 20000 --workdir /tmp/unigeo-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.embed.job import embed_raster  # noqa: E402
from engine.model.contract import EncoderSpec, Modality, Preprocess  # noqa: E402
from engine.raster.gdal_reader import GdalReader  # noqa: E402
from engine.raster.tiling import grid_for_raster  # noqa: E402

BANDS = ("red", "green", "blue")


class MeanEncoder:
    """Analytic encoder: per-band means of the chip and its quadrants, L2-normalised."""

    dim = 15
    model_hash = "bench-mean-encoder"

    def __init__(self, size: int) -> None:
        self.size = size

    def has(self, modality: Modality) -> bool:
        return modality is Modality.AERIAL

    def spec(self, modality: Modality) -> EncoderSpec:
        pre = Preprocess(size=self.size, bands=BANDS, mean=(0.0,) * 3, std=(1.0,) * 3, gsd_m=1.0)
        return EncoderSpec(modality, self.dim, {"pixels": ["batch", 3, self.size, self.size]}, pre)

    def encode_tiles(
        self, modality: Modality, chips: np.ndarray, batch_size: int = 32
    ) -> np.ndarray:
        h = self.size // 2
        parts = [
            chips,
            chips[..., :h, :h],
            chips[..., :h, h:],
            chips[..., h:, :h],
            chips[..., h:, h:],
        ]
        f = np.concatenate([np.nan_to_num(np.nanmean(p, axis=(2, 3))) for p in parts], axis=1)
        f = f.astype(np.float32) + 1e-3
        return f / np.linalg.norm(f, axis=1, keepdims=True)


def make_sparse_tif(path: Path, size: int, block: int = 512) -> float:
    """Write the test raster; return the fraction of blocks that hold data."""
    import rasterio
    from affine import Affine

    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
        transform=Affine(1.0, 0, 500_000.0, 0, -1.0, 5_100_000.0), nodata=0, tiled=True,
        blockxsize=block, blockysize=block, compress="deflate", sparse_ok=True,
        photometric="MINISBLACK",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    nb = -(-size // block)
    written = 0
    with rasterio.open(path, "w", **profile) as dst:
        for i in range(nb):
            for j in range(nb):
                if abs(i - j) > nb // 8:
                    continue  # left sparse: reads back as nodata
                h, w = min(block, size - i * block), min(block, size - j * block)
                data = rng.integers(1, 255, (3, h, w), dtype=np.uint8)
                dst.write(data, window=rasterio.windows.Window(j * block, i * block, w, h))
                written += 1
    return written / nb**2


def rss_mb() -> float:
    """Peak RSS of this process in MB.

    VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a big parent (as
    under bench/run_all.py) would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000, help="raster side in pixels")
    ap.add_argument("--tile", type=int, default=224, help="tile side in pixels")
    ap.add_argument("--workers", type=int, default=2, help="reader threads (0: auto)")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    tif = args.workdir / f"sparse_{args.size}.tif"
    t0 = time.perf_counter()
    if not tif.exists():
        make_sparse_tif(tif, args.size)
    make_s = time.perf_counter() - t0
    rss_before = rss_mb()
    model = MeanEncoder(args.tile)
    store_path = args.workdir / "store"
    shutil.rmtree(store_path, ignore_errors=True)
    t0 = time.perf_counter()
    with GdalReader(tif) as reader:
        grid = grid_for_raster(reader, model.spec(Modality.AERIAL).preprocess)
        store = embed_raster(
            model, reader, grid, store_path, workers=args.workers or None, resume=False
        )
    wall = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in store_path.iterdir())
    print(
        json.dumps(
            {
                "raster_px": [args.size, args.size, 3],
                "raster_gb_uncompressed": round(3 * args.size**2 / 1e9, 2),
                "tiles": grid.n_tiles,
                "valid_tiles": store.meta["valid_tiles"],
                "embed_wall_s": round(wall, 1),
                "tiles_per_s": store.meta["tiles_per_s"],
                "io_wait_s": store.meta["io_wait_s"],
                "workers": store.meta["workers"],
                "inference_s": store.meta["inference_s"],
                "peak_rss_mb_before_embed": round(rss_before),
                "peak_rss_mb": round(rss_mb()),
                "store_mb": round(size / 1e6, 2),
                "make_raster_s": round(make_s, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
