"""FOCAL's test-time step: cluster one image's pixel embeddings, call the largest cluster pristine.

FOCAL (Wu, Chen, Zhou) learns embeddings in which "forged" and "pristine" are separated *within
one image*, and replaces the classifier by clustering at test time. This module does that
clustering on a feature grid (D, h, w) (stride 4 of the image for the FOCAL extractors). It
imports numpy, scikit-learn and hdbscan only, never torch, so an ONNX-runtime backend can use it.

Pipeline (:func:`cluster_map`)::

    features (D, h, w) --L2 per pixel (in chunks)--> unit vectors x_i
    PCA fitted on a random subsample (eigh of the covariance) --> z_i in R^p (all N = h*w points)
    HDBSCAN on n <= max_points random z_i (min cluster size scaled to n, see below)
    per cluster: up to 8 prototypes (k-means inside the cluster) and a spread sigma_k
    every point not clustered (not in the subsample, or HDBSCAN noise) -> the cluster k that
        minimises (distance to k's nearest prototype) / sigma_k
    relabel by size: 0 = largest = pristine; the others are forged when separated (d' >= 3)

Decisions (why):

* **Minimum cluster size.** The paper uses a minimum cluster size of about 200 on its feature
  grid, taken here as the HRNet grid (1024 x 1024 input, stride 4: 256 x 256 = 65,536 points;
  the official ViT's stride-16 grid would have 4,096), a fraction of 0.31 %
  (:data:`MIN_CLUSTER_FRACTION`). Here the fraction is kept, not the count, so a region must
  cover about 0.3 % of the image at any resolution; an explicit ``min_cluster_size`` is in grid
  points and is scaled to the subsample the same way. Floor :data:`MIN_CLUSTER_FLOOR` points: on
  small grids HDBSCAN with tiny clusters fragments texture into spurious clusters.
* **Single cluster = nothing found.** HDBSCAN runs with ``allow_single_cluster=False``: the
  root of its tree is never a cluster, so a unimodal cloud (an authentic image) ends as one
  cluster plus noise or as all noise, and both mean "nothing found" (empty mask, score 0). With
  ``allow_single_cluster=True`` HDBSCAN was seen to return the root for two well separated blobs
  (1,634 + 18,366 points in 16-D) because the dense root outlives its children.
* **Separation gate.** A cluster other than the largest is forged only if its separation d'
  (below) from the largest is at least ``min_separation`` (:data:`MIN_SEPARATION` = 4.5):
  cutting one Gaussian in two halves along its main axis gives d' = 2.65, and HDBSCAN's
  spurious splits of one blob measured 1.3-2.6, so a smaller d' is one population cut in two,
  not a second source; 4.5 rather than 3 keeps the authentic false alarms of real photos
  (distinct surfaces) at 5 %. Such clusters stay in ``labels`` but not in ``mask``;
  ``min_separation=0`` is the paper's plain rule.
* **Noise label (-1).** In 8-D PCA space HDBSCAN leaves many points as noise (often most of a
  broad cloud), so treating noise as its own class would make "forged" whatever is sparse, and
  treating it as pristine would cut the halo off every forged region. Noise points are assigned
  like unsampled points: to the cluster whose nearest prototype is closest *in units of that
  cluster's spread*, so the halo of a broad pristine cloud does not leak into a tight forged
  cluster. If HDBSCAN labels everything noise, there is one cluster: nothing found.
* **Subsampling and prediction.** ``hdbscan.approximate_predict`` (``prediction_data=True``)
  took 33-61 s for 100k points in 16-D, a 5-NN classifier 4-11 s, the prototype rule 0.01 s;
  at 12 MP (750k points) only the prototype rule fits in seconds. The subsample is uniform at
  random (every region keeps its share of points in expectation).
* **KMeans (``method="kmeans"``).** Reproduces the released code: 2 clusters of the L2-normalised
  features (cosine k-means there; Euclidean k-means on unit vectors, in PCA space, here), the
  smaller one forged. It always marks something, also on authentic images: kept for comparison.

Image score: for each forged cluster k, d'_k = the distance between its centroid and the
pristine centroid divided by the pooled standard deviation of both along that axis (a 1-D Fisher
separation, independent of the dimension; splitting one Gaussian in two halves gives 2.65),
and its area fraction a_k. ``score = max_k sigmoid(d'_k - 4) * a_k / (a_k + 0.002)``, 0
when nothing is found: a raw monotone score, to be mapped to a probability by a logistic
calibration on synthetic validation data (:func:`structure_features`,
:func:`calibrated_score`).

Measured on the project machine (2 shared cores, load ~5 from other jobs, 1 thread; D = 128
features made of two isotropic Gaussian blobs around random unit vectors, the forged one 6 % of
the grid; defaults ``max_points=8000, pca_dim=8``; the one-time ``import hdbscan`` takes 1.6 s
and is not included):

=====================  ============  ==============================  ==================
grid (image)            total         of which: HDBSCAN / assign all  peak RSS added
=====================  ============  ==============================  ==================
256 x 256 (1 MP)        1.1 s         0.87 s / 0.17 s                 +82 MB
750 x 1000 (12 MP)      2.2 s         0.83 s / 1.26 s                 +103 MB
one blob, 12 MP         1.6 s         nothing found (all noise)       +24 MB
KMeans, 12 MP           1.0 s         0.03 s / 0.89 s                 +99 MB
=====================  ============  ==============================  ==================

The features themselves (384 MB at 12 MP and D = 128, 192 MB at D = 64) are the caller's; only
an (N, 8) projection and 65,536-point chunks are added. HDBSCAN's cost grows with
``max_points`` (5,000: 0.55 s, 10,000: 1.6 s) and ``pca_dim`` (4 -> 8 about doubles it), not
with the grid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The paper's minimum cluster size (about 200 points) on its 256 x 256 feature grid.
PAPER_MIN_CLUSTER_SIZE = 200
PAPER_GRID_POINTS = 256 * 256
#: Minimum cluster size as a fraction of the feature grid (0.305 %).
MIN_CLUSTER_FRACTION = PAPER_MIN_CLUSTER_SIZE / PAPER_GRID_POINTS
#: No cluster smaller than this many clustered points (see the module docstring).
MIN_CLUSTER_FLOOR = 10
DEFAULT_MAX_POINTS = 8_000
DEFAULT_PCA_DIM = 8
#: d' a cluster needs to count as forged. Halving one Gaussian along its main axis gives 2.65,
#: so below 3 a "cluster" is one population cut in two, not a second source; real authentic
#: photos split further apart than that (sky and ground), and 4.5 is the value that kept the
#: authentic false-positive rate of the shipped extractor at or under 5 % on synthetic test
#: data (docs/methods/focal.md: 3 / 4 / 4.25 / 4.5 / 5 gave 10.1 / 6.3 / 5.3 / 4.4 / 2.6 %,
#: F1 0.45 / 0.42 / 0.40 / 0.34 / 0.21).
MIN_SEPARATION = 4.5
#: Prototypes per cluster for assigning unclustered points.
MAX_PROTOTYPES = 8
#: Points per chunk when normalising / projecting the full grid (bounds temporary memory).
_CHUNK = 65_536
#: Score constants: separation at which a cluster counts half, area at which it counts half.
SEPARATION_MID = 4.0
AREA_HALF = 0.002


@dataclass
class ClusterResult:
    """The clustering of one feature grid.

    Attributes:
        labels: (h, w) int32 cluster per grid point, 0 .. K-1 ordered by size (0 = largest =
            pristine); no noise label (noise points are assigned, see the module docstring).
        mask: (h, w) bool, True on forged clusters: every cluster but the pristine one whose
            separation passes ``min_separation``.
        sizes: (K,) int64 points per cluster on the grid.
        score: raw image score in [0, 1] (0 when nothing is found).
        facts: JSON-ready details: method, parameters, timings and per-cluster statistics
            (``clusters``: label, size, fraction, separation, persistence, forged).
    """

    labels: np.ndarray
    mask: np.ndarray
    sizes: np.ndarray
    score: float
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        """True when at least one forged cluster was found."""
        return bool(self.mask.any())


# ------------------------------------------------------------------------- helpers


def _check_features(features: np.ndarray) -> np.ndarray:
    feats = np.asarray(features)
    if feats.ndim != 3 or feats.shape[0] < 1 or feats.shape[1] < 1 or feats.shape[2] < 1:
        raise ValueError(f"features must be (D, h, w), got {feats.shape}")
    return feats


def _unit_rows(flat: np.ndarray, start: int, stop: int, normalize: bool) -> np.ndarray:
    """Columns ``start:stop`` of a (D, N) array as (n, D) float32 rows, L2-normalised."""
    rows = np.nan_to_num(np.asarray(flat[:, start:stop], np.float32).T)
    if normalize:
        norms = np.sqrt(np.einsum("nd,nd->n", rows, rows))
        rows /= np.maximum(norms, 1e-12)[:, None]
    return rows


def _take_rows(flat: np.ndarray, index: np.ndarray, normalize: bool) -> np.ndarray:
    """Grid points ``index`` of a (D, N) array as (n, D) float32 rows, L2-normalised."""
    rows = np.nan_to_num(np.asarray(flat[:, index], np.float32).T)
    if normalize:
        rows /= np.maximum(np.linalg.norm(rows, axis=1), 1e-12)[:, None]
    return rows


def _fit_pca(sample: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean (D,), components (D, p) and explained variance ratio of a (n, D) sample.

    Eigen-decomposition of the D x D covariance (D is at most a few hundred): cheaper than an
    SVD of the sample and deterministic up to the sign of each component.
    """
    mean = sample.mean(axis=0, dtype=np.float64)
    centered = sample.astype(np.float64) - mean
    cov = centered.T @ centered / max(1, len(sample) - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:dim]
    total = float(values.sum())
    explained = float(values[order].sum() / total) if total > 0 else 0.0
    return mean.astype(np.float32), vectors[:, order].astype(np.float32), explained


def _project(flat: np.ndarray, mean: np.ndarray, comps: np.ndarray, normalize: bool
             ) -> np.ndarray:
    """All N grid points of (D, N) projected on the PCA components: (N, p) float32.

    In chunks, so the only full-size array is the (N, p) result (a normalised copy of a 12 MP
    grid at D = 128 would be 384 MB).
    """
    n = flat.shape[1]
    out = np.empty((n, comps.shape[1]), np.float32)
    offset = mean @ comps
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        out[start:stop] = _unit_rows(flat, start, stop, normalize) @ comps - offset
    return out


def _scaled_min_size(min_cluster_size: int | None, n_grid: int, n_sub: int) -> int:
    """Minimum cluster size in clustered points (see the module docstring)."""
    grid_size = (MIN_CLUSTER_FRACTION * n_grid if min_cluster_size is None
                 else float(min_cluster_size))
    return max(MIN_CLUSTER_FLOOR, int(round(grid_size * n_sub / n_grid)))


def _prototypes(points: np.ndarray, labels: np.ndarray, n_clusters: int, seed: int
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per cluster: (m_k, p) prototypes (k-means inside the cluster) and the RMS distance of its
    members to their nearest prototype (the spread used to compare distances across clusters).
    """
    from sklearn.cluster import KMeans

    protos: list[np.ndarray] = []
    spread = np.empty(n_clusters, np.float64)
    for k in range(n_clusters):
        members = points[labels == k]
        m = int(min(MAX_PROTOTYPES, max(1, len(members) // 50)))
        if m == 1:
            centers = members.mean(axis=0, keepdims=True)
        else:
            km = KMeans(n_clusters=m, n_init=1, max_iter=30, random_state=seed).fit(members)
            centers = km.cluster_centers_
        d2 = ((members[:, None, :] - centers[None]) ** 2).sum(-1).min(axis=1)
        protos.append(centers.astype(np.float32))
        spread[k] = math.sqrt(float(d2.mean())) if len(d2) else 0.0
    floor = max(1e-6, 0.05 * float(np.median(spread[spread > 0]))) if (spread > 0).any() else 1e-6
    return protos, np.maximum(spread, floor)


def _assign(points: np.ndarray, protos: Sequence[np.ndarray], spread: np.ndarray) -> np.ndarray:
    """(n,) cluster of each point: argmin over k of (distance to k's nearest prototype) / sigma_k.

    Done in chunks of points; cost O(n * total prototypes * p).
    """
    allp = np.concatenate(protos, axis=0)
    owner = np.concatenate([np.full(len(p), k) for k, p in enumerate(protos)])
    scale = spread[owner].astype(np.float32)
    sq = (allp * allp).sum(axis=1)
    out = np.empty(len(points), np.int32)
    for start in range(0, len(points), _CHUNK):
        z = points[start:start + _CHUNK]
        d2 = np.maximum((z * z).sum(axis=1)[:, None] - 2.0 * z @ allp.T + sq[None], 0.0)
        out[start:start + _CHUNK] = owner[np.argmin(np.sqrt(d2) / scale[None], axis=1)]
    return out


def _separation(points: np.ndarray, labels: np.ndarray, k: int, ref: int) -> float:
    """d' of cluster ``k`` against cluster ``ref`` along the axis joining their centroids."""
    a, b = points[labels == k], points[labels == ref]
    if len(a) == 0 or len(b) == 0:
        return 0.0
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    dist = float(np.linalg.norm(ca - cb))
    if dist <= 0:
        return 0.0
    axis = (ca - cb) / dist
    pooled = math.sqrt(0.5 * (float((a @ axis).var()) + float((b @ axis).var())))
    return float(min(50.0, dist / max(pooled, 1e-6 * dist)))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def cluster_score(separation: float, fraction: float) -> float:
    """Raw score of one forged cluster: ``sigmoid(d' - 4) * a / (a + 0.002)`` in [0, 1]."""
    return _sigmoid(separation - SEPARATION_MID) * fraction / (fraction + AREA_HALF)


# ------------------------------------------------------------------------- public


def cluster_map(
    features: np.ndarray,
    method: str = "hdbscan",
    min_cluster_size: int | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    pca_dim: int = DEFAULT_PCA_DIM,
    seed: int = 0,
    normalize: bool = True,
    n_jobs: int = 1,
    min_separation: float = MIN_SEPARATION,
) -> ClusterResult:
    """Cluster a feature grid; the largest cluster is pristine, the others forged.

    Args:
        features: (D, h, w) float pixel embeddings of one image (any scale; L2-normalised per
            pixel here when ``normalize``, as FOCAL's cosine geometry wants).
        method: ``"hdbscan"`` (the paper) or ``"kmeans"`` (the released code: 2 clusters, the
            smaller forged, always marks something).
        min_cluster_size: HDBSCAN's minimum cluster size in *grid points*; None scales the
            paper's 200 on 256 x 256 (:data:`MIN_CLUSTER_FRACTION` of the grid).
        max_points: points clustered (a uniform random subsample); the rest are assigned to the
            nearest cluster prototype (see the module docstring).
        pca_dim: dimensions kept after PCA (HDBSCAN's trees slow down quickly above ~10).
        seed: for the subsample, the PCA sample and k-means.
        normalize: L2-normalise each pixel's embedding first.
        n_jobs: threads for HDBSCAN's core distances.
        min_separation: a cluster other than the largest is forged only when its separation d'
            from the largest is at least this (HDBSCAN only; 0 = the paper's rule, every other
            cluster forged). Below it the cluster stays in ``labels`` but not in ``mask``.

    Returns:
        :class:`ClusterResult` on the (h, w) grid.
    """
    if method not in ("hdbscan", "kmeans"):
        raise ValueError(f"method must be 'hdbscan' or 'kmeans', not {method!r}")
    if max_points < 2 * MIN_CLUSTER_FLOOR or pca_dim < 1:
        raise ValueError("max_points must be >= 20 and pca_dim >= 1")
    t0 = time.perf_counter()
    feats = _check_features(features)
    d, h, w = feats.shape
    n = h * w
    flat = feats.reshape(d, n)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, size=max_points, replace=False)) if n > max_points else np.arange(n)
    facts: dict[str, Any] = {"method": method, "grid": [h, w], "dim": d, "points": n,
                             "clustered_points": int(len(sub)), "seed": seed}

    def nothing(reason: str) -> ClusterResult:
        timings = facts.setdefault("time_s", {})
        timings["total"] = round(time.perf_counter() - t0, 4)
        facts.update({"n_clusters": 1, "found": False, "reason": reason, "clusters": []})
        return ClusterResult(np.zeros((h, w), np.int32), np.zeros((h, w), bool),
                             np.array([n], np.int64), 0.0, facts)

    if n < 2 * MIN_CLUSTER_FLOOR:
        return nothing("grid too small")
    sample = _take_rows(flat, sub, normalize)
    p = int(min(pca_dim, d, len(sub) - 1))
    mean, comps, explained = _fit_pca(sample, p)
    facts.update({"pca_dim": p, "pca_explained": round(explained, 4)})
    if explained == 0.0:
        return nothing("constant features")
    zs = (sample @ comps - mean @ comps).astype(np.float32)
    del sample
    t_pca = time.perf_counter()

    persistence: np.ndarray | None = None
    if method == "hdbscan":
        import hdbscan

        mcs = _scaled_min_size(min_cluster_size, n, len(sub))
        clusterer = hdbscan.HDBSCAN(min_cluster_size=mcs, allow_single_cluster=False,
                                    core_dist_n_jobs=max(1, int(n_jobs)))
        sub_labels = clusterer.fit(zs).labels_.astype(np.int32)
        persistence = np.asarray(clusterer.cluster_persistence_, np.float64)
        facts.update({"min_cluster_size": mcs,
                      "min_cluster_size_grid": int(round(mcs * n / len(sub))),
                      "noise_fraction": round(float((sub_labels < 0).mean()), 4)})
    else:
        from sklearn.cluster import KMeans

        sub_labels = KMeans(n_clusters=2, n_init=3, random_state=seed).fit(zs).labels_
        sub_labels = sub_labels.astype(np.int32)
        facts["noise_fraction"] = 0.0
    n_found = int(sub_labels.max()) + 1 if (sub_labels >= 0).any() else 0
    t_cluster = time.perf_counter()
    facts["clusters_found"] = n_found
    if n_found <= 1:
        facts["time_s"] = {"pca": round(t_pca - t0, 4), "cluster": round(t_cluster - t_pca, 4)}
        return nothing("one cluster" if n_found == 1 else "all noise")

    # Assign every point that HDBSCAN did not label (unsampled or noise) with the prototype
    # rule; the clustered, non-noise points keep HDBSCAN's labels.
    keep = sub_labels >= 0
    if method == "kmeans":  # as k-means itself: nearest centroid, no spread weighting
        protos = [zs[sub_labels == k].mean(axis=0, keepdims=True) for k in range(n_found)]
        spread = np.ones(n_found)
    else:
        protos, spread = _prototypes(zs[keep], sub_labels[keep], n_found, seed)
    z_all = _project(flat, mean, comps, normalize)
    labels = _assign(z_all, protos, spread)
    labels[sub[keep]] = sub_labels[keep]
    t_assign = time.perf_counter()

    # Relabel by size on the whole grid: 0 = largest = pristine.
    sizes = np.bincount(labels, minlength=n_found).astype(np.int64)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty(n_found, np.int32)
    rank[order] = np.arange(n_found, dtype=np.int32)
    labels = rank[labels]
    sizes = sizes[order]
    sub_final = labels[sub]
    gate = float(min_separation) if method == "hdbscan" else 0.0
    clusters = []
    forged_labels = []
    best = 0.0
    for k in range(n_found):
        frac = float(sizes[k] / n)
        sep = 0.0 if k == 0 else _separation(zs, sub_final, k, 0)
        forged = k > 0 and sep >= gate
        entry: dict[str, Any] = {"label": k, "size": int(sizes[k]), "fraction": round(frac, 6),
                                 "forged": forged, "separation": round(sep, 4)}
        if persistence is not None and order[k] < len(persistence):
            entry["persistence"] = round(float(persistence[order[k]]), 4)
        if k > 0:
            entry["score"] = round(cluster_score(sep, frac), 4)
        if forged:
            forged_labels.append(k)
            best = max(best, cluster_score(sep, frac))
        clusters.append(entry)
    labels = labels.reshape(h, w)
    mask = np.isin(labels, forged_labels)
    facts.update({
        "n_clusters": n_found, "found": bool(mask.any()), "clusters": clusters,
        "forged_fraction": round(float(mask.mean()), 6),
        "time_s": {"pca": round(t_pca - t0, 4), "cluster": round(t_cluster - t_pca, 4),
                   "assign": round(t_assign - t_cluster, 4),
                   "total": round(time.perf_counter() - t0, 4)},
    })
    return ClusterResult(labels, mask, sizes, float(best), facts)


#: Names of :func:`structure_features`, in a fixed order (for calibration tables).
STRUCTURE_FEATURES = ("found", "n_forged", "forged_fraction", "log_area", "max_separation",
                      "weighted_separation", "candidate_separation", "max_persistence",
                      "noise_fraction", "raw_score")


def structure_features(result: ClusterResult) -> dict[str, float]:
    """Numbers describing the cluster structure, inputs of a logistic calibration.

    Returns:
        ``found`` (0/1), ``n_forged`` (forged clusters), ``forged_fraction`` (area),
        ``log_area`` (log10 of the area, -6 when empty), ``max_separation`` and
        ``weighted_separation`` (area-weighted) of the forged clusters' d',
        ``candidate_separation`` (the largest d' of any cluster but the pristine one, also those
        the separation gate kept out of the mask), ``max_persistence``
        (HDBSCAN's cluster persistence, 0 for k-means), ``noise_fraction`` (HDBSCAN noise in the
        clustered sample) and ``raw_score``.
    """
    clusters = result.facts.get("clusters", [])
    forged = [c for c in clusters if c.get("forged")]
    area = float(sum(c["fraction"] for c in forged))
    seps = [float(c["separation"]) for c in forged]
    weighted = (sum(c["separation"] * c["fraction"] for c in forged) / area) if area > 0 else 0.0
    return {
        "found": float(bool(forged)),
        "n_forged": float(len(forged)),
        "forged_fraction": area,
        "log_area": math.log10(area) if area > 0 else -6.0,
        "max_separation": max(seps, default=0.0),
        "weighted_separation": float(weighted),
        "candidate_separation": max((float(c["separation"]) for c in clusters[1:]), default=0.0),
        "max_persistence": max((float(c.get("persistence", 0.0)) for c in forged), default=0.0),
        "noise_fraction": float(result.facts.get("noise_fraction", 0.0)),
        "raw_score": float(result.score),
    }


def calibrated_score(features: Mapping[str, float], coef: Mapping[str, float]) -> float:
    """Logistic calibration: ``sigmoid(coef["bias"] + sum_k coef[k] * features[k])``.

    Args:
        features: :func:`structure_features` of a result.
        coef: ``"bias"`` and weights by feature name (fitted on synthetic validation data).

    Returns:
        Probability in [0, 1] that the image is manipulated.

    Raises:
        ValueError: a coefficient names a feature that is not there.
    """
    unknown = sorted(k for k in coef if k != "bias" and k not in features)
    if unknown:
        raise ValueError(f"calibration names unknown features: {', '.join(unknown)}")
    z = float(coef.get("bias", 0.0))
    for key, weight in coef.items():
        if key != "bias":
            z += float(weight) * float(features[key])
    return _sigmoid(z)


def project_2d(features: np.ndarray, labels: np.ndarray, n: int = 2000, seed: int = 0,
               normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D PCA projection of a subsample of the grid, for an explain plot.

    Args:
        features: (D, h, w). labels: (h, w) int (e.g. :attr:`ClusterResult.labels`).
        n: points drawn at random (all when the grid is smaller).

    Returns:
        ``(points (m, 2) float32, labels (m,) int32)`` with ``m = min(n, h * w)``.
    """
    feats = _check_features(features)
    d, h, w = feats.shape
    if np.shape(labels) != (h, w):
        raise ValueError(f"labels {np.shape(labels)} do not match the grid {(h, w)}")
    flat = feats.reshape(d, h * w)
    rng = np.random.default_rng(seed)
    pick = (np.sort(rng.choice(h * w, size=n, replace=False)) if h * w > n
            else np.arange(h * w))
    rows = _take_rows(flat, pick, normalize)
    mean, comps, _ = _fit_pca(rows, min(2, d))
    pts = rows @ comps - mean @ comps
    if pts.shape[1] < 2:
        pts = np.pad(pts, ((0, 0), (0, 2 - pts.shape[1])))
    return pts.astype(np.float32), np.asarray(labels).reshape(-1)[pick].astype(np.int32)


#: Cluster colours of :func:`projection_figure` (label -1 = noise, grey), RGB.
_CLUSTER_COLOURS = np.array([[66, 133, 244], [234, 67, 53], [251, 188, 5], [52, 168, 83],
                             [171, 71, 188], [0, 172, 193], [255, 112, 67]], np.uint8)


def projection_figure(points: np.ndarray, labels: np.ndarray, pristine: int | None,
                      size: int = 200) -> np.ndarray:
    """A scatter picture of :func:`project_2d`'s points coloured by cluster, for explain.

    The pristine (largest) cluster is blue, the others warm colours, noise grey.

    Returns:
        (size, size, 3) uint8, white background.
    """
    img = np.full((size, size, 3), 255, np.uint8)
    if len(points) == 0:
        return img
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = ((points - lo) / span * (size - 9) + 4).astype(int)
    order = sorted(set(labels.tolist()) - {-1, pristine}) if pristine is not None else sorted(
        set(labels.tolist()) - {-1})
    for x, y, lab in zip(xy[:, 0], xy[:, 1], labels, strict=True):
        if lab == -1:
            colour = np.array([170, 170, 170], np.uint8)
        elif lab == pristine:
            colour = _CLUSTER_COLOURS[0]
        else:
            colour = _CLUSTER_COLOURS[1 + order.index(lab) % (len(_CLUSTER_COLOURS) - 1)]
        img[size - 1 - y - 1 : size - 1 - y + 1, x - 1 : x + 1] = colour
    return img


# ------------------------------------------------------------------------- fusion


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 linear resampling along one axis (pixel-centre aligned).

    Upsampling: linear interpolation (``align_corners=False``, edges clamped). Downsampling:
    area averaging (each output cell averages the input it covers), so no point is skipped.
    """
    if n_out == n_in:
        return np.eye(n_in, dtype=np.float32)
    mat = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    if n_out > n_in:
        pos = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = pos - lo
        np.add.at(mat, (np.arange(n_out), lo), 1.0 - frac)
        np.add.at(mat, (np.arange(n_out), hi), frac)
    else:
        for j in range(n_out):
            a, b = j * scale, (j + 1) * scale
            for i in range(int(math.floor(a)), min(n_in, int(math.ceil(b)))):
                mat[j, i] = min(b, i + 1) - max(a, i)
        mat /= mat.sum(axis=1, keepdims=True)
    return mat.astype(np.float32)


def _l2_channels(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.sqrt(np.einsum("dhw,dhw->hw", x, x)), 1e-12)[None]


def fuse_features(features: Sequence[np.ndarray], grid: tuple[int, int]) -> np.ndarray:
    """FOCAL's test-time fusion of several extractors: normalise, resize, concatenate.

    Each map is L2-normalised along channels, resampled to ``grid`` (linear up, area down) and
    normalised again (resampling shortens unit vectors), so every extractor weighs the same in
    the concatenation whatever its dimension. No retraining is involved.

    Args:
        features: maps (D_i, h_i, w_i) float.
        grid: target (h, w).

    Returns:
        (sum D_i, h, w) float32; each extractor's block has unit norm at every pixel.
    """
    if not features:
        raise ValueError("fuse_features needs at least one feature map")
    gh, gw = int(grid[0]), int(grid[1])
    if gh < 1 or gw < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    blocks = []
    for feat in features:
        x = _l2_channels(np.asarray(_check_features(feat), np.float32))
        _, h, w = x.shape
        if (h, w) != (gh, gw):
            x = _resample_matrix(h, gh) @ (x @ _resample_matrix(w, gw).T)
            x = _l2_channels(x)
        blocks.append(x.astype(np.float32, copy=False))
    return np.concatenate(blocks, axis=0)
