"""Out-of-domain masks and warnings: tile centres against the training boxes, GSD range."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from engine.errors import InputError
from engine.grid import TileGrid
from engine.model.bundle_spec import TrainingDomain
from engine.search.domain import (
    domain_warning,
    grid_gsd_m,
    gsd_out_of_range,
    in_domain_lonlat,
    out_of_domain_mask,
)


def _utm_store(fx, rows=20, cols=30, valid=None):
    return fx.make_store(np.ones((rows, cols, 4)), valid)


def _box_through_column(fx, store, col):
    """A WGS84 box whose west edge passes between tile columns col-1 and col (at mid-height)."""
    tr = Transformer.from_crs(fx.UTM, "EPSG:4326", always_xy=True)
    x0, _, x1, _ = store.grid.cell_bounds(0, col)
    _, y = store.grid.tile_center(store.grid.rows // 2, col)
    west, _ = tr.transform(x0 - 0.1 * (x1 - x0), y)  # inside column col-1's cell, past its centre
    return (west, -80.0, 170.0, 80.0)


def test_mask_of_utm_grid_partly_outside_a_box(fx):
    store = _utm_store(fx)
    box = _box_through_column(fx, store, 12)
    domain = TrainingDomain(bboxes=(box,))
    mask = out_of_domain_mask(store, domain)
    assert mask.shape == (20, 30) and mask.dtype == bool
    # reference: TrainingDomain.contains on every transformed centre, one at a time
    tr = Transformer.from_crs(fx.UTM, "EPSG:4326", always_xy=True)
    want = np.array(
        [
            [not domain.contains(*tr.transform(*store.grid.tile_center(r, c))) for c in range(30)]
            for r in range(20)
        ]
    )
    np.testing.assert_array_equal(mask, want)
    # columns left of the edge are outside, the ones right of it are inside
    assert mask[:, :11].all() and not mask[:, 13:].any()
    assert 0.35 < mask.mean() < 0.43


def test_warning_sentence_counts_valid_area_only(fx):
    valid = np.ones((20, 30), bool)
    valid[:, 20:] = False  # nodata on the in-domain side raises the outside share
    store = _utm_store(fx, valid=valid)
    domain = TrainingDomain(bboxes=(_box_through_column(fx, store, 12),))
    mask = out_of_domain_mask(store, domain)
    pct = 100 * (mask & valid).sum() / valid.sum()
    msg = domain_warning(store, domain)
    assert msg is not None
    assert msg.startswith(f"{pct:.0f} % of the area lies outside the model's training domain")
    assert msg.endswith("scores there are unreliable.")
    assert domain_warning(store, TrainingDomain(bboxes=((-180, -90, 180, 90),))) is None
    assert domain_warning(store, TrainingDomain()) is None  # no boxes: nothing to say
    assert not out_of_domain_mask(store, TrainingDomain()).any()


def test_gsd_range_checks_and_warning(fx):
    dom = TrainingDomain(gsd_range_m=(0.3, 2.0))
    assert not gsd_out_of_range(0.3, dom) and not gsd_out_of_range(2.0, dom)
    assert gsd_out_of_range(0.1, dom) and gsd_out_of_range(10.0, dom)
    assert not gsd_out_of_range(1e6, TrainingDomain())
    with pytest.raises(InputError):
        gsd_out_of_range(-1.0, dom)
    store = _utm_store(fx)  # 1 m pixels
    assert grid_gsd_m(store.grid) == 1.0
    assert domain_warning(store, dom) is None
    msg = domain_warning(store, dom, gsd_m=5.0)
    assert "ground sample distance (5.00 m)" in msg and "0.3–2 m" in msg


def test_geographic_grid_gsd_in_metres():
    grid = TileGrid("EPSG:4326", 1e-5, 10, 10, 0, 0, 10, 10, 15.0, 45.0)
    # 1e-5 degree of longitude at 45 N is about 0.787 m
    assert grid_gsd_m(grid) == pytest.approx(1e-5 * 111_320 * math.cos(math.radians(45)), rel=5e-3)


def test_antimeridian_boxes_vectorised_like_contains():
    dom = TrainingDomain(bboxes=((170.0, -10.0, -170.0, 10.0), (0.0, 40.0, 10.0, 50.0)))
    lon = np.array([175, -175, 180, -180, 0, 5, 5, 160, -160, 175])
    lat = np.array([0, 0, 5, 5, 40, 50, 51, 0, 0, 11])
    got = in_domain_lonlat(lon, lat, dom)
    want = [dom.contains(float(a), float(b)) for a, b in zip(lon, lat, strict=True)]
    np.testing.assert_array_equal(got, want)
    assert got.tolist() == [True, True, True, True, True, True, False, False, False, False]


def test_real_naip_extent_against_training_boxes(fx, shared_data):
    """The North Dakota NAIP scene (EPSG:26914) against boxes built from its real WGS84 extent."""
    path = sorted((shared_data / "naip_north_dakota").glob("*.tif"))[0]
    with rasterio.open(path) as ds:
        crs, bounds = ds.crs.to_string(), ds.bounds
    grid = TileGrid.for_extent(crs, 5.0, 32, 32, tuple(bounds))
    store = fx.FakeStore(grid, np.zeros((*grid.shape, 4), np.float16), np.ones(grid.shape, bool))
    lon0, lat0, lon1, lat1 = -99.1856, 47.0040, -99.1240, 47.0367  # data/SOURCES.md
    mid = (lon0 + lon1) / 2
    west_half = TrainingDomain(bboxes=((lon0 - 0.01, lat0 - 0.01, mid, lat1 + 0.01),))
    mask = out_of_domain_mask(store, west_half)
    assert 0.4 < mask.mean() < 0.6
    assert not mask[:, 0].any() and mask[:, -1].all()
    swellendam = TrainingDomain(bboxes=((20.069, -34.270, 20.840, -33.751),))
    assert out_of_domain_mask(store, swellendam).all()
    assert domain_warning(store, swellendam).startswith("100 % of the area lies outside")
