"""Per-band statistics of image types, mergeable across tiles and worker processes.

Statistics are taken on every ``STRIDE``-th row and column of each tile (a regular
1/16 subsample: 26,000 pixels per band of a 650 px tile: normalisation statistics need no more, and it keeps the converter near the
read floor). Integer images of up to 16 bits keep a histogram per band, from which every
figure (mean, std, min, max, percentiles) is computed exactly for the subsample; other
dtypes keep count/sum/sum of squares/min/max and a bounded deterministic sample per band
for percentiles. Memory does not grow with the number of tiles. Pixels equal to the
raster's nodata value are excluded.
"""

from __future__ import annotations

import numpy as np

SAMPLE_PER_BAND = 65536
STRIDE = 4


class BandStats:
    """Accumulates statistics of one image type; ``add`` tiles, ``merge`` partials."""

    def __init__(self, dtype: str, bands: int):
        self.dtype = np.dtype(dtype)
        self.bands = bands
        self.exact = self.dtype.kind in "ui" and self.dtype.itemsize <= 2
        self.offset = -int(np.iinfo(self.dtype).min) if self.exact else 0
        nbins = 1 << (8 * self.dtype.itemsize) if self.exact else 0
        self.hist = np.zeros((bands, nbins), np.int64) if self.exact else None
        self.count = np.zeros(bands, np.int64)
        self.sum = np.zeros(bands, np.float64)
        self.sumsq = np.zeros(bands, np.float64)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)
        self.sample = [np.zeros(0, np.float64) for _ in range(bands)]
        self._rng = np.random.default_rng(0)

    def add(self, image: np.ndarray, nodata=None) -> None:
        """Add one HWC image of this type (every STRIDE-th row and column)."""
        self.add_sample(image[::STRIDE, ::STRIDE], nodata)

    def add_sample(self, sub: np.ndarray, nodata=None) -> None:
        """Add pixels already taken every STRIDE-th row and column (``add``'s sample)."""
        if sub.shape[-1] != self.bands:
            raise ValueError(f"image has {sub.shape[-1]} bands, stats expect {self.bands}")
        if self.exact:
            self._add_hist(sub, nodata)
            return
        for b in range(self.bands):
            v = sub[..., b].ravel().astype(np.float64)
            v = v[np.isfinite(v)]
            if nodata is not None and not np.isnan(nodata):
                v = v[v != nodata]
            if v.size == 0:
                continue
            self.count[b] += v.size
            self.sum[b] += v.sum()
            self.sumsq[b] += np.square(v).sum()
            self.min[b] = min(self.min[b], v.min())
            self.max[b] = max(self.max[b], v.max())
            self._keep(b, v[::max(1, v.size // 4096)])

    def _add_hist(self, sub: np.ndarray, nodata) -> None:
        """One bincount over all bands at once, band-interleaved: bin = value * bands + band.

        ``sub``: [h, w, bands] integer view (any strides). Only bins up to the largest
        value present are counted and added, so 11-bit data in uint16 touches 2**11 of
        the 2**16 bins of each band.
        """
        idx = sub.astype(np.intp)  # one strided-gather copy, C order
        if self.offset:
            idx += self.offset
        idx *= self.bands
        idx += np.arange(self.bands, dtype=np.intp)
        idx = idx.reshape(-1)
        if idx.size == 0:
            return
        nvals = int(idx.max()) // self.bands + 1
        counts = np.bincount(idx, minlength=nvals * self.bands).reshape(nvals, self.bands)
        if nodata is not None and not np.isnan(nodata) and float(nodata).is_integer():
            k = int(nodata) + self.offset
            if 0 <= k < nvals:
                counts[k] = 0
        self.hist[:, :nvals] += counts.T

    def _keep(self, b: int, values: np.ndarray) -> None:
        s = np.concatenate([self.sample[b], values])
        if s.size > SAMPLE_PER_BAND:
            s = self._rng.choice(s, SAMPLE_PER_BAND, replace=False)
        self.sample[b] = s

    def merge(self, other: "BandStats") -> None:
        """Add another partial of the same image type."""
        if other.bands != self.bands or other.dtype != self.dtype:
            raise ValueError("cannot merge statistics of different dtypes or band counts")
        if self.exact:
            self.hist += other.hist
            return
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        for b in range(self.bands):
            self._keep(b, other.sample[b])

    def _percentile(self, b: int, q: float) -> float:
        if self.exact:
            cdf = np.cumsum(self.hist[b])
            idx = int(np.searchsorted(cdf, q / 100.0 * cdf[-1], side="left"))
            return float(idx - self.offset)
        return float(np.percentile(self.sample[b], q)) if self.sample[b].size else float("nan")

    def _moments_from_hist(self) -> None:
        values = np.arange(self.hist.shape[1], dtype=np.float64) - self.offset
        self.count = self.hist.sum(1)
        self.sum = self.hist @ values
        self.sumsq = self.hist @ np.square(values)
        for b in range(self.bands):
            nz = np.flatnonzero(self.hist[b])
            self.min[b] = values[nz[0]] if nz.size else np.inf
            self.max[b] = values[nz[-1]] if nz.size else -np.inf

    def summary(self) -> dict:
        """{"count", "mean", "std", "min", "max", "p1", "p99"}: lists of one value per band."""
        if self.exact:
            self._moments_from_hist()
        n = np.maximum(self.count, 1)
        mean = self.sum / n
        std = np.sqrt(np.maximum(self.sumsq / n - mean ** 2, 0.0))
        empty = self.count == 0

        def clean(a):
            return [None if e else float(x) for x, e in zip(a, empty)]

        return {
            "dtype": self.dtype.name,
            "count": [int(c) for c in self.count],
            "mean": clean(mean), "std": clean(std), "min": clean(self.min),
            "max": clean(self.max),
            "p1": clean([self._percentile(b, 1) for b in range(self.bands)]),
            "p99": clean([self._percentile(b, 99) for b in range(self.bands)]),
        }

    # ---- compact serialisation for worker sidecars -----------------------------------
    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez``; histograms stored sparsely."""
        out = {f"{prefix}/meta": np.array([self.dtype.str, str(self.bands)]),
               f"{prefix}/count": self.count, f"{prefix}/sum": self.sum,
               f"{prefix}/sumsq": self.sumsq, f"{prefix}/min": self.min,
               f"{prefix}/max": self.max}
        if self.exact:
            b, i = np.nonzero(self.hist)
            out[f"{prefix}/hist_idx"] = np.stack([b, i]).astype(np.int64)
            out[f"{prefix}/hist_val"] = self.hist[b, i]
        else:
            for b in range(self.bands):
                out[f"{prefix}/sample{b}"] = self.sample[b]
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "BandStats":
        dtype, bands = arrays[f"{prefix}/meta"]
        s = cls(str(dtype), int(bands))
        for name in ("count", "sum", "sumsq", "min", "max"):
            setattr(s, name, np.array(arrays[f"{prefix}/{name}"]))
        if s.exact:
            b, i = arrays[f"{prefix}/hist_idx"]
            s.hist[b, i] = arrays[f"{prefix}/hist_val"]
        else:
            s.sample = [np.array(arrays[f"{prefix}/sample{b}"]) for b in range(s.bands)]
        return s
