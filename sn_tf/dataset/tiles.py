"""One tile from its source files to the schema's canonical tile dict (no TF, no I/O writes).

``build_tile`` is the per-tile unit of work of the converter: read every image type
(GeoTIFF or lab HDF5), check them against the dataset's contract, replace non-finite
pixels, check that they share one footprint, read and repair the labels, put them in the
raster CRS, and compute the label layers on every label grid. A data problem raises
``TileSkipped`` (the tile is skipped); smaller problems become notes (the tile is
converted with what could be read).

The rules (README "Convert"):

* Contract: every image type has one dtype and one band count in the whole dataset
  (``ImageSpec``; the converter fixes it from the first tiles it probes,
  ``TileOptions.contract``). A tile whose pixels have another dtype or band count is
  skipped with both specs in the reason. Sizes may differ (the pipeline crops windows out
  of tiles of any size; Rio's tiles are 438 or 439 px wide): a height or width off the
  AOI's usual size by more than ``size_tolerance`` (1 %, at least 2 px) is a note.
* Non-finite pixels (NaN, +-inf; float rasters only) are stored as the raster's declared
  nodata value when that is finite, else as 0, and the tile gets a note with the count;
  a declared nodata that is itself NaN is stored as 0, so those pixels stay marked as
  nodata (and out of the band statistics). An image type with no finite pixel skips the
  tile. Negative values (int16, float) are values like any other: stored as they are.
* Labels: a label file that cannot be read or parsed, members of the wrong JSON type,
  an unknown CRS or NaN / infinite coordinates skip the tile (``geo.read_label_geojson``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sn_tf.spacenet import geo
from sn_tf.dataset import labels, schema
from sn_tf.spacenet.layout import LABEL_GRID_PRIORITY, TileSource
from sn_tf.utils.errors import SnTfError

# distance and sdf are built in their stored dtype (float16): the same values as casting
# float32 layers when encoding, at a fraction of the cost (labels.compute_labels)
_LABEL_FLOAT = (schema.LABEL_DTYPES["distance"]
                if schema.LABEL_DTYPES["distance"] == schema.LABEL_DTYPES["sdf"] else "float32")


class TileSkipped(SnTfError):
    """The tile cannot be converted; ``str()`` names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """What every tile of one image type must be: pixel dtype, band count and size."""

    dtype: str
    bands: int
    height: int
    width: int

    @classmethod
    def of(cls, data: np.ndarray) -> "ImageSpec":
        """The spec of an HWC array."""
        return cls(data.dtype.name, int(data.shape[2]), int(data.shape[0]), int(data.shape[1]))

    def describe(self) -> str:
        return f"{self.dtype}, {self.bands} band(s), {self.height}x{self.width} px"


def size_tolerance(n: int) -> int:
    """Pixels a tile's height or width may differ from the contract's: 1 %, at least 2."""
    return max(2, math.ceil(0.01 * n))


def spec_problem(spec: ImageSpec, expected: ImageSpec) -> str | None:
    """Why ``spec`` breaks the contract ``expected``: dtype or bands (None when it does not)."""
    off = [f"{what} {got}" for what, got, want in
           (("dtype", spec.dtype, expected.dtype), ("bands", spec.bands, expected.bands))
           if got != want]
    return ", ".join(off) or None


def size_differs(spec: ImageSpec, expected: ImageSpec) -> bool:
    """Whether a tile's size is off the usual one by more than ``size_tolerance``."""
    return (abs(spec.height - expected.height) > size_tolerance(expected.height)
            or abs(spec.width - expected.width) > size_tolerance(expected.width))


@dataclasses.dataclass(frozen=True)
class TileOptions:
    """What to build for each tile (decided once per conversion).

    image_types: image types to store (those a tile lacks are a skip reason when its AOI
      has them). label_grids: image types whose grids carry labels; None = one per distinct
      grid. resample_to / resample_types: additionally store ``T@G`` = type T resampled onto
      grid G. source: "auto" | "geotiff" | "hdf5".
    """

    image_types: tuple[str, ...]
    label_grids: tuple[str, ...] | None = None
    resample_to: str | None = None
    resample_types: tuple[str, ...] = ()
    resample_method: str = "bilinear"
    sdf_truncation: float = 32.0
    contact_radius: int = labels.CONTACT_RADIUS
    source: str = "auto"
    contract: tuple[tuple[str, ImageSpec], ...] = ()  # (image type, spec): empty = unchecked


def _uses_h5(tile: TileSource, itype: str, opts: TileOptions) -> bool:
    """Whether ``itype`` of ``tile`` is read from its lab HDF5 copy (else its GeoTIFF)."""
    return itype in tile.h5 and (opts.source == "hdf5" or
                                 (opts.source == "auto" and itype not in tile.images))


def probe_image(tile: TileSource, itype: str, opts: TileOptions) -> ImageSpec:
    """The spec of one image type of a tile from its header alone (the source
    ``read_images`` would read). Raises ``geo.DataError`` / ``TileSkipped`` for a bad file."""
    if _uses_h5(tile, itype, opts):
        import h5py

        path, name = tile.h5[itype]
        try:
            with h5py.File(path, "r") as f:
                shape, dtype = f[name].shape, f[name].dtype
        except Exception as exc:
            raise TileSkipped(f"{path}:{name}: cannot read HDF5 dataset ({exc})") from None
        if len(shape) != 3:
            raise TileSkipped(f"{path}:{name}: expected 3 dimensions, got shape {shape}")
        h, w, c = (shape[1], shape[2], shape[0]) if shape[0] < shape[-1] else shape
        return ImageSpec(np.dtype(dtype).name, int(c) - 2, int(h), int(w))
    if itype not in tile.images:
        raise TileSkipped(f"{tile.tile_id}: image type {itype} is missing")
    h = geo.raster_header(tile.images[itype])
    return ImageSpec(h.dtype, h.count, h.height, h.width)


def check_contract(images: dict, contract: dict, notes: list[str]) -> None:
    """Raise ``TileSkipped`` naming the file when an image breaks the dataset's contract
    (dtype, bands); a size off the AOI's usual one becomes a note."""
    for itype, (data, header) in images.items():
        expected = contract.get(itype)
        if expected is None:
            continue
        spec = ImageSpec.of(data)
        problem = spec_problem(spec, expected)
        if problem:
            raise TileSkipped(
                f"{header.path}: {itype} pixels have {problem}; the dataset's {itype} tiles "
                f"are {expected.dtype}, {expected.bands} band(s) (fixed by the first tiles "
                "probed)")
        if size_differs(spec, expected):
            notes.append(f"{header.path}: {spec.height}x{spec.width} px where this AOI's "
                         f"{itype} tiles are {expected.height}x{expected.width} px")


def replace_non_finite(images: dict, notes: list[str]) -> dict:
    """Float images: NaN and infinite pixels stored as the nodata value (module docstring).

    Returns the images with headers whose non-finite nodata became 0; raises
    ``TileSkipped`` when an image has no finite pixel at all.
    """
    out = {}
    for itype, (data, header) in images.items():
        if data.dtype.kind == "f":
            nodata = header.nodata
            fill = nodata if nodata is not None and math.isfinite(nodata) else 0.0
            if nodata is not None and not math.isfinite(nodata):
                header = dataclasses.replace(header, nodata=fill)
            bad = ~np.isfinite(data)
            n = int(np.count_nonzero(bad))
            if n == data.size:
                raise TileSkipped(f"{header.path}: no finite pixel (all {n} values are NaN "
                                  "or infinite)")
            if n:
                data[bad] = fill
                notes.append(f"{header.path}: {n} NaN or infinite pixel value(s) stored as "
                             f"{fill:g}" + (" (the nodata value)" if header.nodata is not None
                                            else ""))
        out[itype] = (data, header)
    return out


def _read_h5(path, name: str, header: geo.RasterHeader | None):
    """Image HWC + (mask, distance) layers of one lab HDF5 dataset ``img<N>``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            arr = np.asarray(f[name])
    except Exception as exc:
        raise TileSkipped(f"{path}:{name}: cannot read HDF5 dataset ({exc})") from None
    if arr.ndim != 3 or min(arr.shape[0], arr.shape[-1]) < 3:
        raise TileSkipped(f"{path}:{name}: expected image channels + 2 label layers, "
                          f"got shape {arr.shape}")
    if arr.shape[0] < arr.shape[-1]:  # CHW -> HWC
        arr = np.moveaxis(arr, 0, -1)
    image, mask, dist = arr[..., :-2], arr[..., -2], arr[..., -1]
    if header is not None and (header.height, header.width) != image.shape[:2]:
        raise TileSkipped(f"{path}:{name}: HDF5 image {image.shape[:2]} disagrees with "
                          f"{header.path} ({header.height}, {header.width})")
    return np.ascontiguousarray(image), mask, dist


def read_images(tile: TileSource, opts: TileOptions) -> tuple[dict, dict, list[str]]:
    """Read the tile's image types: ({type: (array HWC, header)}, {type: h5 layers}, notes)."""
    images, h5_layers, notes = {}, {}, []
    for itype in opts.image_types:
        tif, h5 = tile.images.get(itype), tile.h5.get(itype)
        use_h5 = _uses_h5(tile, itype, opts)
        if tif is None and not use_h5:
            raise TileSkipped(f"{tile.tile_id}: image type {itype} is missing "
                              f"(present: {sorted({*tile.images, *tile.h5})})")
        try:
            if use_h5:
                header = geo.raster_header(tif) if tif is not None else None
                data, mask, dist = _read_h5(h5[0], h5[1], header)
                if header is None:
                    notes.append(f"{h5[0]}:{h5[1]}: no GeoTIFF beside the HDF5 copy; "
                                 "stored without georeference")
                    header = geo.RasterHeader(str(h5[0]), data.shape[1], data.shape[0],
                                              data.shape[2], data.dtype.name,
                                              geo.IDENTITY_GDAL, "", None)
                h5_layers[itype] = (mask, dist)
            else:
                data, header = geo.read_raster(tif)
        except geo.DataError as exc:
            raise TileSkipped(str(exc)) from None
        images[itype] = (data, header)
    return images, h5_layers, notes


def check_footprints(tile_id: str, images: dict) -> None:
    """All image types of a tile must cover one footprint (within one coarsest pixel)."""
    heads = [h for _, h in images.values() if h.crs]
    if len(heads) < 2:
        return
    crss = {h.crs for h in heads}
    if len(crss) > 1:
        raise TileSkipped(f"{tile_id}: image types are in different CRSs {sorted(crss)}")
    tol = max(max(abs(h.transform_gdal[1]), abs(h.transform_gdal[5])) for h in heads)
    ref = heads[0]
    for h in heads[1:]:
        diff = max(abs(a - b) for a, b in zip(ref.bounds(), h.bounds()))
        if diff > tol:
            raise TileSkipped(
                f"{h.path}: footprint {tuple(round(v, 9) for v in h.bounds())} disagrees with "
                f"{ref.path} {tuple(round(v, 9) for v in ref.bounds())} by {diff:.3g} map units")


def grid_key(header: geo.RasterHeader) -> tuple:
    """Hashable identity of a pixel grid: size, rounded transform and CRS."""
    return (header.width, header.height, header.crs,
            tuple(round(v, 12) for v in header.transform_gdal))


def label_grid_of(images: dict, label_grids: tuple[str, ...] | None) -> dict[str, str]:
    """image type -> the label-carrying type on the same grid ("" if none).

    With ``label_grids`` None, every distinct grid gets labels, carried by its
    highest-priority type (``LABEL_GRID_PRIORITY``).
    """
    by_grid: dict[tuple, list[str]] = {}
    for itype, (_, header) in images.items():
        by_grid.setdefault(grid_key(header), []).append(itype)
    result = {}
    for types in by_grid.values():
        carriers = [t for t in types if label_grids is None or t in label_grids]
        carriers.sort(key=lambda t: LABEL_GRID_PRIORITY.index(t)
                      if t in LABEL_GRID_PRIORITY else len(LABEL_GRID_PRIORITY))
        for t in types:
            result[t] = carriers[0] if carriers else ""
    return result


def resample(data: np.ndarray, src: geo.RasterHeader, dst: geo.RasterHeader,
             method: str) -> np.ndarray:
    """HWC ``data`` on grid ``src`` reprojected onto grid ``dst`` (same dtype)."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    out = np.zeros((data.shape[2], dst.height, dst.width), data.dtype)
    reproject(np.moveaxis(data, -1, 0), out,
              src_transform=geo.to_affine(src.transform_gdal), src_crs=src.crs or None,
              dst_transform=geo.to_affine(dst.transform_gdal), dst_crs=dst.crs or None,
              resampling=Resampling[method])
    return np.ascontiguousarray(np.moveaxis(out, 0, -1))


def _labels_on_grid(tile: TileSource, polys_map, header, notes, grid) -> dict:
    polys_px = geo.map_to_pixel(polys_map, header.transform_gdal)
    kept, dropped = labels.clip_to_tile(polys_px, header.height, header.width)
    if polys_px and not kept:
        raise TileSkipped(
            f"{tile.label_path}: all {len(polys_px)} polygons fall outside the tile "
            f"{header.path} (labels in another CRS than declared, or for another tile?)")
    if dropped:
        notes.append(f"{tile.label_path}: {dropped} polygon(s) outside the {grid} grid dropped")
    return kept


def build_tile(tile: TileSource, opts: TileOptions) -> tuple[dict, list[str]]:
    """The schema's canonical tile dict for one tile, and notes about what was repaired.

    Raises ``TileSkipped`` for problems that make the tile unusable.
    """
    images, h5_layers, notes = read_images(tile, opts)
    check_contract(images, dict(opts.contract), notes)
    images = replace_non_finite(images, notes)
    check_footprints(tile.tile_id, images)
    grid_of = label_grid_of(images, opts.label_grids)
    if opts.resample_to:
        if opts.resample_to not in images:
            raise TileSkipped(f"{tile.tile_id}: --resample_to type {opts.resample_to} missing")
        dst = images[opts.resample_to][1]
        for t in opts.resample_types:
            data, src = images[t]
            images[f"{t}@{opts.resample_to}"] = (resample(data, src, dst, opts.resample_method),
                                                 dataclasses.replace(
                                                     dst, count=data.shape[2],
                                                     dtype=data.dtype.name, nodata=src.nodata))
            grid_of[f"{t}@{opts.resample_to}"] = grid_of[opts.resample_to]
    out = {"tile_id": tile.tile_id, "aoi": tile.aoi, "images": {}, "labels": {}}
    for itype, (data, header) in images.items():
        out["images"][itype] = {"data": data, "transform_gdal": header.transform_gdal,
                                "crs": header.crs, "nodata": header.nodata,
                                "label_grid": grid_of.get(itype, "")}
    grids = sorted({g for g in grid_of.values() if g})
    if tile.label_path is not None:
        ref_crs = next((h.crs for _, h in images.values() if h.crs), "")
        try:
            read = geo.read_label_geojson(tile.label_path, dst_crs=ref_crs or None)
        except geo.DataError as exc:
            raise TileSkipped(str(exc)) from None
        notes += [f"{tile.label_path}: {n}" for n in read.notes]
        for grid in grids:
            header = images[grid][1]
            kept = _labels_on_grid(tile, read.polygons, header, notes, grid)
            out["labels"][grid] = labels.compute_labels(
                kept, header.height, header.width, opts.sdf_truncation, _LABEL_FLOAT,
                opts.contact_radius)
    elif tile.labels_expected and not h5_layers:
        raise TileSkipped(f"{tile.tile_id}: no label file (expected one in the AOI's "
                          "label folder)")
    else:
        for grid in grids:
            if grid in h5_layers:
                mask, dist = h5_layers[grid]
                out["labels"][grid] = labels.labels_from_mask(mask, dist, opts.sdf_truncation,
                                                              opts.contact_radius)
                notes.append(f"{tile.tile_id}: labels of {grid} from the HDF5 layers "
                             "(no GeoJSON): buildings are mask components")
    return out, notes


def estimate_tile_bytes(tile: TileSource, opts: TileOptions) -> int:
    """Upper estimate of one serialized tile (raw pixels + label arrays), from headers only."""
    total, grids = 0, {}
    for itype in opts.image_types:
        path = tile.images.get(itype)
        if path is None:
            continue
        h = geo.raster_header(path)
        total += h.width * h.height * h.count * np.dtype(h.dtype).itemsize
        grids[grid_key(h)] = h.width * h.height
    if opts.resample_to and opts.resample_to in tile.images:
        h = geo.raster_header(tile.images[opts.resample_to])
        for t in opts.resample_types:
            if t in tile.images:
                c = geo.raster_header(tile.images[t])
                total += h.width * h.height * c.count * np.dtype(c.dtype).itemsize
    total += sum(5 * n for n in grids.values())  # uint8 mask + 2 x float16 layers
    return max(int(total), 1)


def shard_count(n_tiles: int, bytes_per_tile: int, shard_size_bytes: int) -> int:
    """Number of shards so that each holds about ``shard_size_bytes`` (at least one)."""
    return max(1, math.ceil(n_tiles * bytes_per_tile / shard_size_bytes)) if n_tiles else 0
