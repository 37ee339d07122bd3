"""Conversion round trip on real SpaceNet tiles (../shared/realdata), laid out in tmp_path.

The tiles are symlinked into a SpaceNet layout (never copied into the repository). Rio
labels are made from the real Rio building masks (mask -> pixel polygons -> lon/lat
GeoJSON), so the converted mask must equal the real mask exactly.
"""

import json

import numpy as np
import pytest

from sn_tf.dataset import converter
from sn_tf.dataset import labels
from sn_tf.spacenet import geo
from sn_tf.dataset.reader import read_examples

RIO = [50, 53, 54, 58, 59, 61]  # 438 and 439 px wide; img58 all zero, img59 no-data, img61 empty


def _geojson(polys_map, crs_name="urn:ogc:def:crs:OGC:1.3:CRS84"):
    feats = [{"type": "Feature", "properties": {"id": i},
              "geometry": {"type": "Polygon", "coordinates": [
                  [[x, y, 0.0] for x, y in ring.coords]
                  for ring in [p.exterior, *p.interiors]]}}
             for i, p in enumerate(polys_map)]
    return json.dumps({"type": "FeatureCollection",
                       "crs": {"type": "name", "properties": {"name": crs_name}},
                       "features": feats})


@pytest.fixture(scope="module")
def real_layout(realdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("realdata_layout")
    rio = root / "AOI_1_Rio_Train" / "processedBuildingLabels"
    (rio / "3-Band").mkdir(parents=True)
    (rio / "vectordata" / "geojson").mkdir(parents=True)
    masks = {}
    for n in RIO:
        src = realdata / f"spacenet_buildings_exploration/3band/3band_013022223130_Public_img{n}.tif"
        (rio / "3-Band" / f"3band_AOI_1_RIO_img{n}.tif").symlink_to(src)
        mdata, h = geo.read_raster(realdata / "spacenet_buildings_exploration/building_mask_vis"
                                   / f"3band_013022223130_Public_img{n}.tif")
        masks[f"AOI_1_RIO_img{n}"] = (mdata[..., 0] > 0).astype(np.uint8)
        polys = labels.labels_from_mask(masks[f"AOI_1_RIO_img{n}"])["polygons_px"]
        (rio / "vectordata" / "geojson" / f"Geo_AOI_1_RIO_img{n}.geojson").write_text(
            _geojson(geo.pixel_to_map(polys, h.transform_gdal)))
    vegas = root / "AOI_2_Vegas_Train"
    (vegas / "PAN").mkdir(parents=True)
    (vegas / "geojson" / "buildings").mkdir(parents=True)
    (vegas / "PAN" / "PAN_AOI_2_Vegas_img1.tif").symlink_to(realdata / "solaris/road_mask_input.tif")
    (vegas / "geojson" / "buildings" / "buildings_AOI_2_Vegas_img1.geojson").write_text(_geojson([]))
    atl = root / "AOI_9_Atlanta_Train"
    (atl / "PAN").mkdir(parents=True)
    (atl / "geojson" / "buildings").mkdir(parents=True)
    (atl / "PAN" / "PAN_AOI_9_Atlanta_img1.tif").symlink_to(realdata / "solaris/sample_geotiff.tif")
    (atl / "geojson" / "buildings" / "buildings_AOI_9_Atlanta_img1.geojson").symlink_to(
        realdata / "solaris/geotiff_labels.geojson")
    out = root / "out"
    result = converter.convert(root, out, converter.ConvertConfig(num_workers=1, progress=False,
                                                                  splits=(("train", 1.0),)))
    return root, out, result, masks


def test_every_real_tile_converted(real_layout):
    _, _, result, _ = real_layout
    assert result.exit_code == converter.EXIT_OK, result.info.skipped
    assert result.info.split("train").num_examples == len(RIO) + 2


def test_real_pixels_bit_exact_and_georeference_kept(real_layout, realdata):
    root, out, _, masks = real_layout
    seen = set()
    for tile in read_examples(out):
        (itype, img), = tile["images"].items()
        folder = {"3band": "AOI_1_Rio_Train/processedBuildingLabels/3-Band",
                  "PAN": f"{tile['aoi']}_Train/PAN"}[itype]
        src, h = geo.read_raster(root / folder / f"{itype}_{tile['tile_id']}.tif")
        assert img["data"].dtype == src.dtype and img["data"].shape == src.shape
        np.testing.assert_array_equal(img["data"], src)
        assert img["transform_gdal"] == h.transform_gdal and img["crs"] == h.crs
        lab = tile["labels"][itype]
        if tile["tile_id"] in masks:
            np.testing.assert_array_equal(lab["mask"], masks[tile["tile_id"]])
        seen.add(tile["tile_id"])
    assert {"AOI_1_RIO_img59", "AOI_2_Vegas_img1", "AOI_9_Atlanta_img1"} <= seen


def test_rio_widths_and_special_tiles(real_layout):
    _, out, _, _ = real_layout
    tiles = {t["tile_id"]: t for t in read_examples(out)}
    assert tiles["AOI_1_RIO_img59"]["images"]["3band"]["data"].shape == (406, 439, 3)
    assert tiles["AOI_1_RIO_img50"]["images"]["3band"]["data"].shape == (406, 438, 3)
    assert tiles["AOI_1_RIO_img58"]["images"]["3band"]["data"].max() == 0
    assert tiles["AOI_1_RIO_img61"]["labels"]["3band"]["boxes_xyxy_px"].shape == (0, 4)
    assert tiles["AOI_1_RIO_img53"]["labels"]["3band"]["mask"].mean() == pytest.approx(0.28, abs=0.01)


def test_utm_labels_on_utm_raster(real_layout, realdata):
    """SN4 Atlanta: labels declared EPSG:32616 burned on the UTM tile (43 buildings)."""
    _, out, _, _ = real_layout
    tile = next(t for t in read_examples(out) if t["tile_id"] == "AOI_9_Atlanta_img1")
    lab = tile["labels"]["PAN"]
    assert len(lab["polygons_px"]) >= 43  # repaired multipart buildings may add parts
    assert 0.02 < lab["mask"].mean() < 0.5
    assert np.all(lab["boxes_xyxy_px"] >= 0) and np.all(lab["boxes_xyxy_px"] <= 900)
