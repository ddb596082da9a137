"""Pixel scaling chosen in Processing (SENSOR); the dock's Scaling drop-down: test_band_panel.

A dim 16-bit RGBN raster in Sentinel-2 L1C units (reflectance x 10000, values up to 0.3): the
automatic 2-98 % stretch spreads it over [0, 1]; the sensor rule keeps it at absolute
reflectance. Both front ends must hand the choice to the engine's reader (same embeddings as
``GdalReader(scale="sensor:...")``), record it, and keep it apart in the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.plugin.test_tasks import ORIGIN, PX, SIZE, UTM

pytestmark = pytest.mark.qgis

S2 = "sentinel2_l1c"


def write_s2(path: Path) -> Path:
    """Left half water (blue above NIR), right half vegetation (NIR high), uint16, 0 = no data."""
    import rasterio
    from affine import Affine

    data = np.empty((4, SIZE, SIZE), np.uint16)
    half = SIZE // 2
    data[:, :, :half] = np.array([300, 500, 700, 200], np.uint16)[:, None, None]
    data[:, :, half:] = np.array([400, 700, 350, 3000], np.uint16)[:, None, None]
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=4, dtype="uint16", crs=UTM)
    profile["transform"] = Affine(PX, 0.0, ORIGIN[0], 0.0, -PX, ORIGIN[1])
    with rasterio.open(path, "w", photometric="MINISBLACK", nodata=0, **profile) as dst:
        dst.write(data)
        dst.descriptions = ("red", "green", "blue", "nir")
    return path


def _engine_store(model, path: Path, scale: str, out: Path):
    from unigeo.engine import pipeline
    from unigeo.engine.raster import GdalReader

    reader = GdalReader(path, scale=scale)
    grid = pipeline.tile_grid(model, reader)
    return pipeline.embed(model, reader, grid, out)


@pytest.fixture(scope="module")
def s2_tif(tmp_path_factory) -> Path:
    return write_s2(tmp_path_factory.mktemp("s2") / "s2_l1c.tif")


def test_processing_sensor_reaches_the_reader_and_is_recorded(
    run, s2_tif, analytic_bundle, tmp_path
):
    from unigeo.engine.model import UniGeoModel
    from unigeo.engine.store.npy import EmbeddingStore

    run("embedraster", INPUT=str(s2_tif), SENSOR=S2, OUTPUT_STORE=str(tmp_path / "s"))
    run("embedraster", INPUT=str(s2_tif), OUTPUT_STORE=str(tmp_path / "a"))
    sensor, auto = EmbeddingStore.open(tmp_path / "s"), EmbeddingStore.open(tmp_path / "a")
    assert sensor.info["scaling"] == f"sensor:{S2}"
    assert auto.info["scaling"].startswith("percentile2-98")
    model = UniGeoModel.load(analytic_bundle)
    want = _engine_store(model, s2_tif, f"sensor:{S2}", tmp_path / "engine")
    np.testing.assert_allclose(np.asarray(sensor.embeddings), np.asarray(want.embeddings))
    # absolute reflectance (<= 0.3) sits below the spec mean in every band; the stretch does not
    e_s, e_a = np.asarray(sensor.embeddings, np.float32), np.asarray(auto.embeddings, np.float32)
    assert np.abs(e_s - e_a).max() > 0.2


def test_processing_sensor_on_a_query_and_its_errors(run, s2_tif, tmp_path):
    from qgis.core import QgsProcessingException

    out = tmp_path / "heat.tif"
    res = run("heatmap", INPUT=str(s2_tif), SENSOR=S2, QUERY_TEXT="nir", OUTPUT=str(out))
    assert Path(res["OUTPUT"]).is_file()
    with pytest.raises(QgsProcessingException, match="DSM is read in metres"):
        run("embedraster", INPUT=str(s2_tif), SENSOR=S2, MODALITY="dsm",
            OUTPUT_STORE=str(tmp_path / "d"))  # fmt: skip
    with pytest.raises(QgsProcessingException):  # not one of the table's sensors
        run("embedraster", INPUT=str(s2_tif), SENSOR="no_such_sensor",
            OUTPUT_STORE=str(tmp_path / "x"))  # fmt: skip
    assert not (tmp_path / "x").exists() and not (tmp_path / "d").exists()


def test_sensor_scaling_needs_a_raster_file(qgis_new_project, tmp_path):
    from qgis.core import QgsRasterLayer
    from unigeo.engine.errors import RasterInputError
    from unigeo.plugin.qgis_reader import reader_for_layer

    url = f"file://{tmp_path}/{{z}}/{{x}}/{{y}}.png"
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmin=0&zmax=2", "xyz", "wms")
    assert layer.isValid()
    with pytest.raises(RasterInputError, match="Save the layer as a GeoTIFF"):
        reader_for_layer(layer, scale=f"sensor:{S2}")


def test_processing_bands_zero_marks_a_band_the_raster_lacks(run, tmp_path):
    """Scripts can mark an absent band with 0, as on the CLI: ``BANDS=[1, 2, 3, 0, 4, 0]`` on an
    RGB + SWIR1 raster reads SWIR1 from band 4 and masks NIR and SWIR2 (the shipped encoder's
    band mask). The same four bands listed without the zeros are read as R, G, B, NIR: a
    different embedding. The dialog's band picker cannot list 0 (help text says so)."""
    import rasterio
    from affine import Affine
    from unigeo.engine.model import UniGeoModel
    from unigeo.engine.store.npy import EmbeddingStore

    from tests.plugin.test_tasks import ORIGIN, PX, SIZE, UTM

    shipped = Path(__file__).resolve().parents[2] / "resources" / "models" / "default"
    path = tmp_path / "rgb_swir.tif"
    profile = dict(driver="GTiff", width=SIZE, height=SIZE, count=4, dtype="uint8", crs=UTM,
                   transform=Affine(PX, 0.0, ORIGIN[0], 0.0, -PX, ORIGIN[1]))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(0).integers(1, 255, (4, SIZE, SIZE), dtype=np.uint8))
    marked = [1, 2, 3, 0, 4, 0]
    run("embedraster", INPUT=str(path), BANDS=marked, MODEL=str(shipped),
        OUTPUT_STORE=str(tmp_path / "marked"))  # fmt: skip
    run("embedraster", INPUT=str(path), BANDS=[1, 2, 3, 4], MODEL=str(shipped),
        OUTPUT_STORE=str(tmp_path / "as_nir"))  # fmt: skip
    got = np.asarray(EmbeddingStore.open(tmp_path / "marked").embeddings, np.float32)
    as_nir = np.asarray(EmbeddingStore.open(tmp_path / "as_nir").embeddings, np.float32)

    from unigeo.engine import pipeline
    from unigeo.engine.raster import GdalReader

    model = UniGeoModel.load(shipped)
    reader = GdalReader(path, bands=tuple(marked))
    want = pipeline.embed(model, reader, pipeline.tile_grid(model, reader), tmp_path / "engine")
    np.testing.assert_allclose(got, np.asarray(want.embeddings, np.float32), atol=1e-5)
    assert np.abs(got - as_nir).max() > 0.05
