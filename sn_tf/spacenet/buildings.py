"""SpaceNet buildings: the :class:`Building` record, tile ids and cities, the file formats' names.

The one record type every producer (the polygon head, ``sn_tf.head``) and consumer (the
metric, ``sn_tf.spacenet.scoring``) of buildings shares, the tile id found in a file name and
its city (:func:`city_of`), and the names of the SpaceNet formats (CSV header, suffixes, the
GeoJSON property keys read). Files: ``building_writers`` (SpaceNet CSV and GeoJSON),
``building_readers`` (CSV, GeoJSON, folders), ``crs`` (coordinate systems and units of
score inputs). numpy + shapely only, so the metric imports it cheaply. Coordinate
conventions: BUILD_NOTES.md section 1 (pixel x = column, y = row, origin at the top-left
corner of the top-left pixel).
"""

from __future__ import annotations

import dataclasses
import os
import re

# SpaceNet tile id inside a file name, e.g. "RGB-PanSharpen_AOI_5_Khartoum_img924.tif".
TILE_ID_RE = re.compile(r"AOI_\d+_[A-Za-z]+_img\d+")

CSV_HEADER = "ImageId,BuildingId,PolygonWKT_Pix,Confidence"
GEOJSON_SUFFIXES = (".geojson", ".json")
CSV_SUFFIXES = (".csv",)
CONFIDENCE_KEYS = ("confidence", "Confidence", "conf", "score")
IMAGE_ID_KEYS = ("image_id", "ImageId")


@dataclasses.dataclass(frozen=True)
class Building:
    """One building (truth or proposal) of one image.

    Attributes:
      image_id: tile id, e.g. ``"AOI_2_Vegas_img3457"`` (no image-type prefix).
      polygon: shapely geometry in pixel coordinates (x=col, y=row) or map coordinates. An EMPTY
        geometry (or ``None``) adds no building; it only registers the image (a tile with no
        buildings). Readers may also return a MultiPolygon proposal, which scores as one
        building; the writers split MultiPolygons into one row per part.
      confidence: score used to order proposals (higher first); 1.0 for truth.
      building_id: optional id from the source file (informational; writers renumber).
    """

    image_id: str
    polygon: object
    confidence: float = 1.0
    building_id: int | None = None

    @property
    def is_empty(self) -> bool:
        """True when this record only registers its image (no polygon)."""
        return self.polygon is None or self.polygon.is_empty


# ----------------------------------------------------------------------------------------------
# Names and transforms


def tile_id_from_name(name: str | os.PathLike) -> str:
    """Tile id (``AOI_<n>_<City>_img<N>``) found in a file name, else the file stem.

    >>> tile_id_from_name("/x/RGB-PanSharpen_AOI_5_Khartoum_img924.tif")
    'AOI_5_Khartoum_img924'
    """
    base = os.path.basename(os.fspath(name))
    match = TILE_ID_RE.search(base)
    if match:
        return match.group(0)
    stem = base
    for suffix in (".geojson", ".json", ".csv", ".tif", ".tiff"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return os.path.splitext(stem)[0]


# ----------------------------------------------------------------------------------------------
# Cities


def city_of(image_id: str) -> str:
    """City of a tile id: its first three ``_`` tokens (``AOI_2_Vegas_img1`` -> ``AOI_2_Vegas``)."""
    return "_".join(image_id.split("_")[:3])
