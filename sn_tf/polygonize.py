"""``python -m sn_tf.polygonize``: building polygons from a model-output raster.

    python -m sn_tf.polygonize --raster=FILE [--band=1] [--kind=logit] [--threshold=0]
        [--min_area=0] [--simplify=0] [--sdf_raster=FILE --sdf_band=1 --sdf_level=2]
        [--transform=GT0,GT1,GT2,GT3,GT4,GT5 --crs=EPSG:4326] [--image_id=ID]
        --output=FILE.geojson|FILE.csv

Pixels with value > threshold are buildings (default threshold per --kind: logit 0,
probability 0.5, mask 0, sdf 0; a --threshold must be finite); touching buildings are split
with --sdf_raster when given.
NaN rule: NaN and the raster's nodata value are nodata, never building by themselves; with
--nan=fill (default) nodata pixels enclosed by a building belong to it (no hole), other
nodata pixels are background; --nan=background makes every nodata pixel background (enclosed
ones then are holes). An all-nodata raster, or one with no pixel above the threshold, writes
an empty output with a warning on stderr.
The georeference is the raster's own, or --transform (GDAL order) with --crs (required with
--transform unless the raster has a CRS; a raster with a geotransform but no CRS needs --crs).
``.geojson`` output always names its CRS: the map CRS, or, without any georeference, sn_tf's
pixel CRS (``sn_tf.spacenet.crs.PIXEL_CRS_WKT``: an engineering CRS in pixels that GDAL, and
so QGIS, read as "not georeferenced" instead of taking the coordinates for WGS84);
``.csv`` output is a SpaceNet CSV in pixel coordinates (an image without buildings gets a
``POLYGON EMPTY`` row). --min_area and --simplify are in map units when a georeference is
known (m2 / m in a UTM CRS), else in pixels.
Exit status: 0 on success, 1 on an input problem (message on stderr, no traceback).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from absl import app, flags

from sn_tf.utils.errors import SnTfError

FLAGS = flags.FLAGS
flags.DEFINE_string("raster", None, "Model-output raster (GeoTIFF or any GDAL raster).")
flags.DEFINE_integer("band", 1, "Band of --raster to polygonise (1-based).")
flags.DEFINE_enum("kind", "logit", ["logit", "probability", "mask", "sdf"],
                  "What the band holds; sets the default threshold and the confidence "
                  "(mean of sigmoid(value) for logit/sdf, mean value for probability, 1 for mask).")
flags.DEFINE_float("threshold", None, "Building where value > threshold (default per --kind).")
flags.DEFINE_float("min_area", 0.0, "Drop polygons with area < min_area (map units if georeferenced).")
flags.DEFINE_float("simplify", 0.0, "Simplification tolerance (0 = none).")
flags.DEFINE_string("sdf_raster", None, "Signed-distance raster (pixels, positive inside) used to "
                    "split touching buildings.")
flags.DEFINE_integer("sdf_band", 1, "Band of --sdf_raster.")
flags.DEFINE_float("sdf_level", 2.0, "Seeds for splitting are the regions with sdf > sdf_level.")
flags.DEFINE_string("transform", None, "GDAL geotransform GT0,GT1,GT2,GT3,GT4,GT5 for rasters "
                    "without georeference (overrides the file's).")
flags.DEFINE_string("crs", None, "CRS of --transform, e.g. EPSG:4326 (overrides the file's).")
flags.DEFINE_string("image_id", None, "Image id for the output (default: tile id in the file name).")
flags.DEFINE_enum("holes", "keep", ["keep", "drop"], "CSV only: keep holes (written '),(') or drop them.")
flags.DEFINE_enum("nan", "fill", ["fill", "background"], "NaN / nodata pixels: 'fill' = "
                  "enclosed by a building they belong to it, else background; 'background' = "
                  "always background (enclosed ones make holes).")
flags.DEFINE_string("output", None, "Output FILE.geojson (or .json) or FILE.csv.")


class CliError(SnTfError):
    """An input problem reported as one line on stderr."""


def _warn(message: str) -> None:
    print(f"sn_tf.polygonize: warning: {message}", file=sys.stderr)


def _fail(message: str) -> None:
    print(f"sn_tf.polygonize: error: {message}", file=sys.stderr)
    sys.exit(1)


def read_band(path: str, band: int):
    """(array [H, W], gdal transform or None, rasterio CRS or None) of one band of ``path``.

    The transform is None when the file carries no georeference (identity transform, no CRS).
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    if not os.path.isfile(path):
        raise CliError(f"{path}: raster file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
        with ds:
            if not 1 <= band <= ds.count:
                raise CliError(f"{path}: band {band} out of range (the file has {ds.count})")
            array = ds.read(band)
            if ds.nodata is not None and not (isinstance(ds.nodata, float) and ds.nodata != ds.nodata):
                nodata = array == ds.nodata
                if nodata.any():
                    array = array.astype("float64")
                    array[nodata] = float("nan")
            georeferenced = ds.crs is not None or not ds.transform.is_identity
            transform = ds.transform.to_gdal() if georeferenced else None
            return array, transform, ds.crs
    except RasterioIOError as err:
        raise CliError(f"{path}: cannot read raster ({err})") from None


def _georeference(file_transform, file_crs):
    """(gdal transform or None, crs or None) from the flags, else from the file."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    from sn_tf.spacenet.geo import as_gdal_transform

    transform, crs = file_transform, file_crs
    if FLAGS.transform:
        try:
            transform = as_gdal_transform(FLAGS.transform)
        except ValueError as err:
            raise CliError(f"--transform: {err}") from None
    if FLAGS.crs:
        try:
            crs = CRS.from_user_input(FLAGS.crs)
        except CRSError as err:
            raise CliError(f"--crs {FLAGS.crs!r}: {err}") from None
    if transform is not None and crs is None:
        what = ("--transform without a CRS" if FLAGS.transform
                else f"{FLAGS.raster} has a geotransform but no CRS")
        raise CliError(f"{what}: give --crs (e.g. --crs=EPSG:32616), the CRS of the map "
                       "coordinates, so the output says what they are")
    return transform, crs


def _check_flags() -> None:
    """Numbers that must be finite (and >= 0) are refused with the flag named."""
    import math

    checks = [("threshold", FLAGS.threshold, False), ("min_area", FLAGS.min_area, True),
              ("simplify", FLAGS.simplify, True), ("sdf_level", FLAGS.sdf_level, False)]
    for name, value, non_negative in checks:
        if value is None:
            continue
        if not math.isfinite(value) or (non_negative and value < 0):
            need = "a finite number >= 0" if non_negative else "a finite number"
            raise CliError(f"--{name}={value}: must be {need}")


def run() -> str:
    """Polygonise per the flags, write the output; returns a one-line summary."""
    from sn_tf.head import rasters
    from sn_tf.spacenet.buildings import tile_id_from_name
    from sn_tf.spacenet.building_writers import write_geojson, write_spacenet_csv
    from sn_tf.spacenet.geo import pixel_area

    if not FLAGS.raster or not FLAGS.output:
        raise CliError("--raster and --output are required")
    suffix = os.path.splitext(FLAGS.output)[1].lower()
    if suffix not in (".geojson", ".json", ".csv"):
        raise CliError(f"--output {FLAGS.output}: use a .geojson, .json or .csv file name")
    _check_flags()
    raster, file_transform, file_crs = read_band(FLAGS.raster, FLAGS.band)
    transform, crs = _georeference(file_transform, file_crs)
    import numpy as np

    threshold = (rasters.DEFAULT_THRESHOLDS[FLAGS.kind] if FLAGS.threshold is None
                 else FLAGS.threshold)
    missing = np.isnan(raster) if np.issubdtype(raster.dtype, np.floating) else None
    if missing is not None and missing.all():
        _warn(f"{FLAGS.raster}: band {FLAGS.band} is all NaN / nodata: no polygons")
    elif not np.any(raster[~missing] > threshold if missing is not None else raster > threshold):
        finite = raster[~missing] if missing is not None else raster
        _warn(f"{FLAGS.raster}: no pixel of band {FLAGS.band} is above the threshold "
              f"{threshold:g} (--kind={FLAGS.kind}; values {finite.min():g}..{finite.max():g}): "
              "no polygons")
    sdf = None
    if FLAGS.sdf_raster:
        sdf, _, _ = read_band(FLAGS.sdf_raster, FLAGS.sdf_band)
        if sdf.shape != raster.shape:
            raise CliError(f"{FLAGS.sdf_raster}: shape {sdf.shape} differs from {FLAGS.raster} "
                           f"{raster.shape}")
    image_id = FLAGS.image_id or tile_id_from_name(FLAGS.raster)
    as_csv = suffix == ".csv"
    scale = pixel_area(transform) if (as_csv and transform is not None) else 1.0
    length = scale ** 0.5
    buildings = rasters.polygons_from_raster(
        raster, image_id, threshold=FLAGS.threshold, kind=FLAGS.kind,
        min_area=FLAGS.min_area / scale, simplify=FLAGS.simplify / length, sdf=sdf,
        sdf_level=FLAGS.sdf_level, transform=None if as_csv else transform, nan=FLAGS.nan)
    try:
        if as_csv:
            write_spacenet_csv(buildings, FLAGS.output, image_ids=[image_id], holes=FLAGS.holes)
        else:
            from sn_tf.spacenet.crs import PIXEL_CRS_WKT

            write_geojson(buildings, FLAGS.output,
                          crs=crs if transform is not None else PIXEL_CRS_WKT)
    except OSError as err:
        raise CliError(f"cannot write {FLAGS.output}: {err.strerror}") from None
    return f"wrote {len(buildings)} polygons of {image_id} to {FLAGS.output}"


def main(argv) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger("rasterio").setLevel(logging.CRITICAL)  # errors are reported by CliError
    try:
        print(run())
    except (CliError, ValueError) as err:
        _fail(str(err))


if __name__ == "__main__":
    app.run(main)
