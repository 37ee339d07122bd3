"""Georeferencing: GDAL/affine order, pixel<->map, CRS handling, on real SpaceNet files."""

import json

import numpy as np
import pytest
import shapely

from sn_tf.spacenet import geo
from sn_tf.dataset import labels




def test_gdal_affine_order_and_pixel_map_on_sample_geotiff(realdata):
    data, h = geo.read_raster(realdata / "solaris/sample_geotiff.tif")
    assert data.shape == (900, 900, 1) and data.dtype == np.uint16
    assert h.transform_gdal == (733601.0, 0.5, 0.0, 3725139.0, 0.0, -0.5)
    assert h.crs == "EPSG:32616" and h.nodata == 0
    a = geo.to_affine(h.transform_gdal)
    assert (a.a, a.b, a.c, a.d, a.e, a.f) == (0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)
    assert geo.affine_to_gdal(a) == h.transform_gdal
    corners = shapely.box(0, 0, 900, 900)
    m = geo.pixel_to_map([corners], h.transform_gdal)[0]
    assert m.bounds == (733601.0, 3724689.0, 734051.0, 3725139.0)
    back = geo.map_to_pixel([m], h.transform_gdal)[0]
    assert back.equals(corners)


def test_vegas_pan_chip_sits_on_the_sn2_tile_grid(realdata):
    _, h = geo.read_raster(realdata / "solaris/road_mask_input.tif")
    assert h.crs == "EPSG:4326" and (h.width, h.height) == (1300, 1300)
    assert h.transform_gdal[1] == pytest.approx(2.7e-6, abs=1e-15)
    tindex = json.loads((realdata / "spacenet_utilities/AOI_2_Vegas/"
                         "AOI_2_Vegas_Train_Tindex.geojson").read_text())
    first = shapely.geometry.shape(tindex["features"][0]["geometry"])
    step = 650 * 2.7e-6
    assert first.bounds[2] - first.bounds[0] == pytest.approx(step, abs=1e-9)
    # the chip's upper-left corner is 26 tiles east and 20 tiles south of the first tile's
    col_steps = (h.transform_gdal[0] - first.bounds[0]) / step
    row_steps = (first.bounds[3] - h.transform_gdal[3]) / step
    assert col_steps == pytest.approx(26, abs=1e-6)
    assert row_steps == pytest.approx(20, abs=1e-6)


def test_khartoum_tile_footprint_from_tindex(realdata):
    tindex = json.loads((realdata / "spacenet_utilities/AOI_5_Khartoum/"
                         "AOI_5_Khartoum_Train_Tindex.geojson").read_text())
    feat = next(f for f in tindex["features"]
                if f["properties"]["location"].endswith("_img924.tif"))
    gt = (32.5525284, 2.7e-6, 0.0, 15.6647412, 0.0, -2.7e-6)
    tile = geo.pixel_to_map([shapely.box(0, 0, 650, 650)], gt)[0]
    fp = shapely.geometry.shape(feat["geometry"])
    np.testing.assert_allclose(tile.bounds, fp.bounds, atol=1e-9)


def test_labels_reprojected_to_raster_crs(realdata):
    utm = geo.read_label_geojson(realdata / "solaris/gt.geojson")
    assert utm.source_crs == "EPSG:32616" and len(utm.polygons) == 28
    wgs = geo.read_label_geojson(realdata / "solaris/gt_epsg4326.json", dst_crs="EPSG:32616")
    assert wgs.source_crs == "EPSG:4326"
    assert any("reprojected" in n for n in wgs.notes)
    assert len(wgs.polygons) == len(utm.polygons)
    for a, b in zip(wgs.polygons, utm.polygons):
        assert a.symmetric_difference(b).area < 0.01  # m2: same footprints to the cm
    # and a CRS84 file burned without reprojection onto UTM would miss the tile entirely
    raw = geo.read_label_geojson(realdata / "solaris/gt_epsg4326.json")
    assert raw.polygons[0].bounds[0] < 0  # lon, not easting


def test_empty_label_file_means_no_buildings(realdata):
    read = geo.read_label_geojson(realdata / "solaris/empty.geojson")
    assert read.polygons == [] and "0 bytes" in read.notes[0]


@pytest.mark.parametrize("img", [50, 53, 54, 58, 59, 61])
def test_rio_masks_survive_pixel_map_pixel(realdata, img):
    """Real Rio building masks: mask -> polygons -> map (tile transform) -> pixels -> mask."""
    path = realdata / f"spacenet_buildings_exploration/building_mask_vis/3band_013022223130_Public_img{img}.tif"
    data, h = geo.read_raster(path)
    mask = (data[..., 0] > 0).astype(np.uint8)
    polys_px = labels.labels_from_mask(mask)["polygons_px"]
    polys_map = geo.pixel_to_map(polys_px, h.transform_gdal)
    back = geo.map_to_pixel(polys_map, h.transform_gdal)
    np.testing.assert_array_equal(labels.rasterize_mask(back, h.height, h.width), mask)


def test_data_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(geo.DataError, match="broken.tif"):
        geo.read_raster(bad)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(geo.DataError, match="0 bytes"):
        geo.read_raster(empty)
    js = tmp_path / "x.geojson"
    js.write_text("{not json")
    with pytest.raises(geo.DataError, match="x.geojson: not valid JSON"):
        geo.read_label_geojson(js)
