"""Issue 16 item 8: a pixel size far outside the training range is warned about before embedding.

A 1 km raster was silently upsampled 200x to 5 m (641,601 tiles, about an hour) though the bundle
declares a 2-90 m training range. :func:`engine.embed.plan.plan_embedding` computes the tile
count, the time (from rates earlier stores recorded, else a conservative constant) and the
warning; the CLI prints it (Processing and the GUI: tests/plugin/test_faults_plugin.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from engine.embed.plan import (
    ASSUMED_TILES_PER_S,
    LARGE_JOB_S,
    duration_text,
    plan_embedding,
    recorded_tiles_per_s,
)
from engine.model.bundle_spec import TrainingDomain
from engine.model.contract import Preprocess
from engine.raster.gdal_reader import GdalReader
from engine.raster.tiling import grid_for_raster
from tests.reliability.conftest import UTM_ORIGIN, random_uint8, write_raster

ISSUE_DOMAIN = TrainingDomain(bboxes=(), gsd_range_m=(2.0, 90.0))


def _raster(path: Path, pixel_m: float, size: int = 100, shift: float = 0.0) -> Path:
    t = Affine(pixel_m, 0, UTM_ORIGIN[0] + shift, 0, -pixel_m, UTM_ORIGIN[1] + shift)
    return write_raster(path, random_uint8(bands=4, size=size), transform=t)


def test_the_issues_1_km_raster_at_5_m(tmp_path):
    """100 x 100 km of 1 km pixels off the tile lattice, tiled at 5 m with 25-px tiles: the
    issue's 641,601 tiles (801 x 801)."""
    with GdalReader(_raster(tmp_path / "coarse.tif", 1000.0, shift=62.5)) as reader:
        grid = grid_for_raster(reader, Preprocess(size=25, gsd_m=5.0), max_tiles=10**7)
        plan = plan_embedding(reader, grid, ISSUE_DOMAIN)
    assert grid.n_tiles == plan.tiles == 641_601
    assert plan.out_of_range and plan.source_gsd_m == pytest.approx(1000.0)
    assert plan.seconds == pytest.approx(641_601 / ASSUMED_TILES_PER_S)
    text = plan.warning()
    assert "'coarse.tif' has 1,000 m pixels, outside the 2-90 m range" in text
    assert "resampled to 5 m (200x finer), 641,601 tiles, about 1 h 11 min" in text
    assert "(assumed)" in text and "Resample the raster into 2-90 m" in text


@pytest.mark.parametrize(
    "pixel_m, out_of_range, words",
    [(1.0, True, "(1x finer)"), (0.5, True, "(2x coarser)"), (10.0, False, None),
     (2.0, False, None), (90.0, False, None), (91.0, True, "(18x finer)")],
)  # fmt: skip
def test_range_ends_and_both_directions(pixel_m, out_of_range, words, tmp_path):
    with GdalReader(_raster(tmp_path / "r.tif", pixel_m, size=40)) as reader:
        grid = grid_for_raster(reader, Preprocess(size=16, gsd_m=1.0 if pixel_m < 2 else 5.0))
        plan = plan_embedding(reader, grid, ISSUE_DOMAIN)
    assert plan.out_of_range is out_of_range
    if words:
        assert words in plan.warning()
    else:
        assert plan.warning() is None  # small and in range: nothing to warn about


def test_a_dsm_is_not_held_to_the_aerial_range_but_a_huge_job_still_warns(tmp_path):
    with GdalReader(_raster(tmp_path / "dsm.tif", 1000.0, shift=62.5)) as reader:
        grid = grid_for_raster(reader, Preprocess(size=25, gsd_m=5.0), max_tiles=10**7)
        plan = plan_embedding(reader, grid, ISSUE_DOMAIN, aerial=False)
    assert not plan.out_of_range and plan.large
    assert plan.warning().startswith("Embedding 'dsm.tif' needs 641,601 tiles")


def test_large_job_threshold_follows_the_rate(tmp_path):
    with GdalReader(_raster(tmp_path / "r.tif", 10.0, size=64)) as reader:
        grid = grid_for_raster(reader, Preprocess(size=16, gsd_m=10.0))  # 16 tiles
        slow = plan_embedding(reader, grid, ISSUE_DOMAIN, tiles_per_s=16 / (LARGE_JOB_S + 1))
        fast = plan_embedding(reader, grid, ISSUE_DOMAIN, tiles_per_s=16 / (LARGE_JOB_S - 1))
        bad = plan_embedding(reader, grid, ISSUE_DOMAIN, tiles_per_s=float("nan"))
    assert slow.large and not fast.large
    assert "measured on earlier stores" in slow.summary()
    assert not bad.measured and bad.tiles_per_s == ASSUMED_TILES_PER_S


@pytest.mark.parametrize(
    "seconds, text",
    [(0.2, "under a second"), (40, "about 40 s"), (89.6, "about 90 s"), (700, "about 12 min"),
     (4277, "about 1 h 11 min"), (90_000, "about 25 h 0 min")],
)  # fmt: skip
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def _fake_store(folder: Path, model_hash: str, rate, tiles, created: str) -> None:
    folder.mkdir(parents=True)
    meta = {"tiles_per_s": rate, "tiles_this_run": tiles}
    info = {"model_hash": model_hash, "created": created, "meta": meta}
    (folder / "store.json").write_text(json.dumps(info))


def test_recorded_rate_is_the_median_of_usable_stores_of_this_model(tmp_path):
    _fake_store(tmp_path / "a", "m1", 100.0, 500, "2026-01-01")
    _fake_store(tmp_path / "b", "m1", 300.0, 500, "2026-01-02")
    _fake_store(tmp_path / "c", "m1", 200.0, 500, "2026-01-03")
    _fake_store(tmp_path / "tiny", "m1", 9999.0, 16, "2026-01-04")  # timed start-up only
    _fake_store(tmp_path / "other", "m2", 5.0, 500, "2026-01-05")  # another model
    _fake_store(tmp_path / "junk", "m1", "fast", 500, "2026-01-06")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "store.json").write_text("{not json")
    assert recorded_tiles_per_s([tmp_path], "m1") == 200.0
    assert recorded_tiles_per_s([tmp_path / "b"], "m1") == 300.0  # a store folder itself
    assert recorded_tiles_per_s([tmp_path], "m3") is None
    assert recorded_tiles_per_s([tmp_path / "missing"], None) is None


def _stdout_lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_cli_embed_warns_with_tiles_and_time(analytic_bundle, tmp_path, capsys):
    """The analytic bundle trains on 5-20 m; a 1 km raster gets the warning, in the CLI output,
    before any tile is embedded (an extent keeps this run short)."""
    from engine.cli.main import main

    src = _raster(tmp_path / "coarse.tif", 1000.0, size=20)
    args = ["embed", str(src), "--model", str(analytic_bundle), "--out", str(tmp_path / "s.store")]
    extent = f"{UTM_ORIGIN[0]},{UTM_ORIGIN[1] - 600},{UTM_ORIGIN[0] + 600},{UTM_ORIGIN[1]}"
    assert main([*args, "--extent", extent]) == 0
    out = _stdout_lines(capsys)
    grid = re.match(r"grid\s+(\d+)×(\d+) tiles", out[0])
    tiles = int(grid.group(1)) * int(grid.group(2))
    warning = next(ln for ln in out if ln.startswith("warning"))
    assert out.index(warning) < next(i for i, ln in enumerate(out) if ln.startswith("store"))
    assert "'coarse.tif' has 1,000 m pixels, outside the 5-20 m range" in warning
    assert f"resampled to 10 m (100x finer), {tiles:,} tiles" in warning


def test_cli_embed_in_range_estimates_from_recorded_rates(
    analytic_bundle, good_raster, tmp_path, capsys
):
    from engine.cli.main import main
    from engine.model import UniGeoModel

    with UniGeoModel.load(analytic_bundle) as model:
        h = model.model_hash
    _fake_store(tmp_path / "earlier.store", h, 42.0, 1000, "2026-01-01")
    args = ["embed", str(good_raster), "--model", str(analytic_bundle)]
    assert main([*args, "--out", str(tmp_path / "s.store")]) == 0
    out = _stdout_lines(capsys)
    assert "estimate 16 tiles, under a second at ~42 tiles/s (measured on earlier stores)" in out
    assert not any(ln.startswith("warning") for ln in out)
    assert np.asarray(json.loads((tmp_path / "s.store" / "store.json").read_text())["dim"]) == 8
