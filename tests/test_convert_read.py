"""The converter's GeoTIFF read (geo.read_raster with FAST_READ_OPTIONS) == GDAL's default read."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sn_tf.spacenet import geo

LAYOUTS = {
    "strips, pixel interleaved": {"interleave": "pixel"},
    "strips, band interleaved": {"interleave": "band"},
    "one-row strips": {"interleave": "pixel", "blockysize": 1},
    "tiled": {"tiled": True, "blockxsize": 32, "blockysize": 32},
    "deflate": {"compress": "deflate"},
    "lzw, tiled": {"compress": "lzw", "tiled": True, "blockxsize": 16, "blockysize": 16},
}


def _write(path, dtype, bands, **layout):
    rng = np.random.default_rng(bands)
    data = (rng.random((bands, 67, 53)) * 1000 - (200 if dtype[0] in "if" else 0)).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=53, height=67, count=bands,
                       dtype=dtype, crs="EPSG:4326", transform=from_origin(10, 20, 0.1, 0.1),
                       **layout) as ds:
        ds.write(data)
    return np.moveaxis(data, 0, -1)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype,bands", [("uint16", 8), ("uint8", 3), ("int16", 1),
                                         ("float64", 4)])
def test_fast_read_equals_default_read(tmp_path, layout, dtype, bands):
    path = tmp_path / "x.tif"
    expected = _write(path, dtype, bands, **LAYOUTS[layout])
    fast, h_fast = geo.read_raster(path)
    slow, h_slow = geo.read_raster(path, fast=False)
    assert fast.dtype == np.dtype(dtype) and fast.shape == (67, 53, bands)
    np.testing.assert_array_equal(fast, expected)
    np.testing.assert_array_equal(slow, expected)
    assert h_fast == h_slow


@pytest.mark.parametrize("layout", ["strips, pixel interleaved", "one-row strips", "tiled"])
def test_truncated_uncompressed_file_is_an_error(tmp_path, layout):
    """Not zeros: the memory-mapped path must refuse a file shorter than its strips."""
    path = tmp_path / "t.tif"
    _write(path, "uint16", 8, **LAYOUTS[layout])
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(geo.DataError, match="t.tif: pixels cannot be read"):
        geo.read_raster(path)


def test_real_geotiffs_read_identically(realdata):
    files = sorted(realdata.rglob("*.tif"))
    assert files
    for f in files:
        np.testing.assert_array_equal(geo.read_raster(f)[0], geo.read_raster(f, fast=False)[0],
                                      err_msg=str(f))
