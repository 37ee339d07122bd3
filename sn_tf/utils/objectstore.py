"""Folders and files on object stores (``gs://``, ``s3://``, any scheme Apache Beam's
``FileSystems`` knows), as far as the converter needs them.

``as_path(x)`` is ``pathlib.Path(x)`` for local paths and an :class:`ObjectPath` for a URL:
the handful of ``pathlib`` operations SpaceNet discovery and the readers use (``/``,
``name``, ``stem``, ``suffix``, ``is_dir``, ``is_file``, ``exists``, ``iterdir``, ``stat``,
``read_bytes``, ``read_text``); ``os.fspath`` gives the URL, which rasterio opens itself
(GDAL's ``/vsigs/``, ``/vsis3/``). An object store has no folders: a "folder" is a prefix
that some object's name continues with ``/``. A root path lists its objects once
(``FileSystems.match``) and its children answer from that listing; a path that was
pickled (to a Beam worker) asks the store again.

Credentials and endpoints are those of the stores' own clients (for S3: boto3's
environment, e.g. ``AWS_ENDPOINT_URL`` for an S3-compatible server, and GDAL's
``AWS_S3_ENDPOINT`` for rasterio; for GCS: application default credentials).
Needs ``apache_beam`` (``pip install sn_tf[beam]``, with ``apache-beam[aws]`` / ``[gcp]``
for the store's client). Problems are :class:`ObjectStoreError`, an ``OSError`` naming the
URL.
"""

from __future__ import annotations

import os
import pathlib
import posixpath
import shutil
import types

from sn_tf.utils.beam_options import import_beam_module
from sn_tf.utils.errors import SnTfError


class ObjectStoreError(SnTfError, OSError):
    """An object store operation failed (names the URL)."""


def is_url(path) -> bool:
    """True for ``scheme://...`` (``file://`` excepted) and for an :class:`ObjectPath`."""
    if isinstance(path, ObjectPath):
        return True
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return "://" in text and not text.startswith("file://")


def as_path(path):
    """An :class:`ObjectPath` for a URL, else ``pathlib.Path(path)``."""
    if isinstance(path, (ObjectPath, pathlib.Path)):
        return path
    return ObjectPath(str(path)) if is_url(path) else pathlib.Path(path)


def filesystems():
    """Beam's ``FileSystems`` (``BeamUnavailable`` naming the extra when Beam is missing),
    with default options when no pipeline set them."""
    fs = import_beam_module("apache_beam.io.filesystems",
                            flag="a gs:// or s3:// path").FileSystems
    if fs._pipeline_options is None:
        from apache_beam.options.pipeline_options import PipelineOptions

        fs.set_options(PipelineOptions([]))
    return fs


def _call(url: str, what: str, fn, *args):
    """``fn(*args)``; any failure becomes ``ObjectStoreError`` naming ``url``."""
    try:
        return fn(*args)
    except ObjectStoreError:
        raise
    except Exception as exc:  # noqa: BLE001 -- the stores' clients raise many types
        msg = str(exc).strip().splitlines()
        raise ObjectStoreError(f"{url}: cannot {what} ({type(exc).__name__}: "
                               f"{msg[0] if msg else ''})") from None


def list_objects(url: str) -> dict[str, types.SimpleNamespace]:
    """{object URL: (size, mtime)} of every object under the prefix ``url``."""
    prefix = url.rstrip("/") + "/"

    def match():
        found = filesystems().match([prefix + "**"])[0].metadata_list
        return {m.path: types.SimpleNamespace(st_size=m.size_in_bytes,
                                              st_mtime_ns=int(m.last_updated_in_seconds * 1e9))
                for m in found}

    return _call(url, "list the objects", match)


class ObjectPath:
    """A URL with the ``pathlib`` operations the readers use (module docstring)."""

    def __init__(self, url: str, listing: dict | None = None):
        self.url = url.rstrip("/") if url.rstrip("/").count("/") > 2 else url
        self._listing = listing

    # ---- names ----------------------------------------------------------------------
    def __str__(self) -> str:
        return self.url

    __fspath__ = __str__

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and other.url == self.url

    def __lt__(self, other) -> bool:
        return self.url < str(other)

    def __hash__(self) -> int:
        return hash(self.url)

    def __getstate__(self):
        return {"url": self.url, "_listing": None}  # a worker asks the store again

    def __truediv__(self, name) -> "ObjectPath":
        return ObjectPath(f"{self.url.rstrip('/')}/{name}", self._listing)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/"))

    @property
    def suffix(self) -> str:
        return pathlib.PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return pathlib.PurePosixPath(self.name).stem

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(posixpath.dirname(self.url.rstrip("/")), self._listing)

    # ---- what is there ----------------------------------------------------------------
    def _objects(self) -> dict:
        """The listing under this path (the root's, when it has one)."""
        if self._listing is None:
            self._listing = list_objects(self.url)
        return self._listing

    def is_file(self) -> bool:
        if self._listing is not None:
            return self.url in self._listing
        return self._metadata() is not None

    def _metadata(self):
        """(st_size, st_mtime_ns) of this one object from the store, None when absent."""
        def match():
            found = filesystems().match([self.url])[0].metadata_list
            return next((types.SimpleNamespace(
                st_size=m.size_in_bytes, st_mtime_ns=int(m.last_updated_in_seconds * 1e9))
                for m in found if m.path == self.url), None)

        return _call(self.url, "check the object", match)

    def is_dir(self) -> bool:
        prefix = self.url.rstrip("/") + "/"
        if self._listing is not None:
            return any(k.startswith(prefix) for k in self._listing)
        return bool(list_objects(self.url))

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self):
        """The objects and "folders" directly under this prefix (sorted)."""
        prefix = self.url.rstrip("/") + "/"
        names = {k[len(prefix):].split("/")[0] for k in self._objects() if k.startswith(prefix)}
        return iter(sorted(ObjectPath(prefix + n, self._listing) for n in names if n))

    def stat(self):
        """``st_size`` and ``st_mtime_ns`` of the object."""
        if self._listing is not None and self.url in self._listing:
            return self._listing[self.url]
        found = self._metadata()
        if found is None:
            raise ObjectStoreError(f"{self.url}: no such object")
        return found

    # ---- contents -----------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        def read():
            with filesystems().open(self.url) as f:
                return f.read()

        return _call(self.url, "read the object", read)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)


def upload(local: pathlib.Path, url: str) -> None:
    """Copy the local file ``local`` to the object ``url``."""
    def copy():
        with open(local, "rb") as src, filesystems().create(url) as dst:
            shutil.copyfileobj(src, dst, 8 << 20)

    _call(url, "write the object", copy)


def upload_tree(local: pathlib.Path, url: str) -> list[str]:
    """Copy every file under the local folder ``local`` to ``url`` (same relative names),
    except hidden ones and those in hidden folders (a conversion's ``.sn_tf_work``: its
    records serve ``--resume``, which an object store output does not offer); returns the
    object URLs written."""
    written = []
    for path in sorted(p for p in pathlib.Path(local).rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(local).parts):
            continue
        target = f"{url.rstrip('/')}/{path.relative_to(local).as_posix()}"
        upload(path, target)
        written.append(target)
    return written


def delete(urls: list[str]) -> None:
    """Delete the objects ``urls`` (none missing)."""
    if urls:
        _call(urls[0], "delete objects", filesystems().delete, list(urls))
