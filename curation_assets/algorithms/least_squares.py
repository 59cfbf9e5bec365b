"""Row sampling for least squares: exact leverage scores, clustering-based sensitivity, uniform.

The problem is min_x ||A x - b|| with A of shape (n, d), n >> d. Each method gives a sampling
distribution p over the rows; `sample_rows` draws m rows i.i.d. from p (each draw weighs
1 / (m p_i), repeated rows merged), and `solve_weighted` solves the rescaled subproblem

    min_x || sqrt(W) (A_S x - b_S) ||,   W = diag(weights),

which is the textbook sketch S A x ~ S b with each sampled row scaled by 1 / sqrt(m p_i).
`relative_excess_residual` measures the result against the full solution.

Leverage scores (Drineas, Mahoney, Muthukrishnan 2006): h_i = ||U_i||^2 for an orthonormal
basis U of range(A), exactly the diagonal of the hat matrix A (A^T A)^+ A^T; sum_i h_i = rank(A).
Sampling p_i = h_i / rank gives a (1 + eps) approximation with O(d log d + d / eps) rows. It needs
only A (no labels b) but a QR of the whole n x d matrix: O(n d^2).

Clustering-based sensitivity for regression (a reconstruction of Axiotis et al., ICML 2024,
who report that it "matches leverage score sampling" for linear regression; their exact
regression procedure is not public, so this follows the general recipe of the paper, see
`sensitivity_regression`). It needs k-means on the rows of A (O(n d k) per Lloyd iteration,
trivially parallel and sharded), one small least-squares fit on a pilot, and one residual per
cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kmeans import assign_to_centroids, default_n_clusters, fit_kmeans
from .representatives import nearest_members
from .sampling import WeightedSample, sample_with_replacement
from .sensitivity import balanced_lambda, check_z, sampling_probabilities, sensitivity_scores
from .validation import as_embedding_matrix, check_whole_number

FEATURES = ("A", "Ab", "whitened")


def sketched_whitening(A, seed: int, rows: int | None = None) -> np.ndarray:
    """A R^-1 with R from the QR of a CountSketch S A (each row of A added, with a random sign, to
    one of `rows` buckets; default min(n, max(4 d^2, 20 d))). When S is a subspace embedding,
    A R^-1 has orthonormal-like columns: its squared row norms approximate the leverage scores and
    Euclidean distances in it are the Mahalanobis distances in which a residual a x - b is equally
    Hoelder in every direction of x. Costs one pass over A plus a triangular solve (n d^2)."""
    A = np.asarray(A, dtype=np.float64)
    n, d = A.shape
    rows = min(n, max(4 * d * d, 20 * d)) if rows is None else int(rows)
    if rows >= n:
        SA = A
    else:
        rng = np.random.default_rng([int(seed) % (2**63), 2])
        SA = np.zeros((rows, d))
        np.add.at(SA, rng.integers(0, rows, n), A * rng.choice([-1.0, 1.0], n)[:, None])
    R = np.linalg.qr(SA, mode="r")
    diag = np.abs(np.diag(R))
    if diag.min() <= 1e-12 * max(diag.max(), 1e-300):
        raise ValueError("A: its columns are (numerically) dependent; drop or combine the collinear columns")
    from scipy.linalg import solve_triangular

    return solve_triangular(R, A.T, trans="T").T


# ------------------------------------------------------------------------------------------
# Input checks (errors name the bad input)
# ------------------------------------------------------------------------------------------


def check_design(A, name: str = "A") -> np.ndarray:
    """A as a float64 (n, d) matrix with finite entries, or a ValueError naming what is wrong."""
    arr = np.asarray(A)
    return as_embedding_matrix(arr.astype(np.float64) if arr.dtype == bool else arr, name, dtype=np.float64)


def check_problem(A, b) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) as float64 arrays of shapes (n, d) and (n,); b may also be given as (n, 1)."""
    A = check_design(A)
    vec = np.asarray(b)
    if vec.ndim == 2 and vec.shape[1] == 1:
        vec = vec[:, 0]
    if vec.ndim != 1:
        raise ValueError(f"b: expected a 1-d array of length {A.shape[0]}, got shape {np.shape(b)}")
    if vec.shape[0] != A.shape[0]:
        raise ValueError(
            f"b: has {vec.shape[0]} entries but A has {A.shape[0]} rows; they must match"
        )
    if not (np.issubdtype(vec.dtype, np.number) or vec.dtype == bool):
        raise ValueError(f"b: expected numbers, got dtype {vec.dtype}")
    vec = np.asarray(vec, dtype=np.float64)
    bad = ~np.isfinite(vec)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"b: {rows.size} entr(ies) are NaN or infinite (first at row {rows[0]})"
        )
    return A, vec


def _check_vector(x, d: int, name: str) -> np.ndarray:
    vec = np.asarray(x, dtype=np.float64)
    if vec.ndim == 2 and vec.shape[1] == 1:
        vec = vec[:, 0]
    if vec.shape != (d,):
        raise ValueError(f"{name}: expected a vector of length {d} (the columns of A), got shape {np.shape(x)}")
    if not np.isfinite(vec).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return vec


# ------------------------------------------------------------------------------------------
# Leverage scores, uniform, sampling, solving, measuring
# ------------------------------------------------------------------------------------------


def leverage_scores(A) -> np.ndarray:
    """Exact leverage scores h_i = ||U_i||^2, U an orthonormal basis of the column space of A.

    Thin QR of A (O(n d^2)), then an SVD of the small d x d factor R to find the numerical
    rank r (singular values above max(n, d) * eps * s_max, numpy's matrix_rank rule). Full rank:
    U = Q. Rank r < d: U = Q V_r with V_r the top r left singular vectors of R, so that the
    scores are still the hat-matrix diagonal and sum to r (not to d).
    """
    A = check_design(A)
    n, d = A.shape
    q, r = np.linalg.qr(A, mode="reduced")  # q: (n, min(n, d))
    u_r, s, _ = np.linalg.svd(r)
    tol = (s[0] if s.size else 0.0) * max(n, d) * np.finfo(np.float64).eps
    rank = int(np.count_nonzero(s > tol))
    if rank == 0:
        raise ValueError("A: is all zeros (rank 0); leverage scores are undefined")
    if rank < q.shape[1]:
        q = q @ u_r[:, :rank]
    return np.einsum("ij,ij->i", q, q)


def leverage_probabilities(A) -> np.ndarray:
    """p_i = h_i / sum(h) = h_i / rank(A)."""
    h = leverage_scores(A)
    return h / h.sum()


def uniform_probabilities(n: int) -> np.ndarray:
    """p_i = 1/n."""
    n = check_whole_number(n, "n")
    return np.full(n, 1.0 / n)


def sample_rows(probabilities, m: int, seed: int, *, n_columns: int | None = None) -> WeightedSample:
    """m i.i.d. draws from p (sampling.sample_with_replacement); each draw weighs 1 / (m p_i).

    `solve_weighted` rescales each sampled row by sqrt(weight) = sqrt(draws / (m p_i)).
    With n_columns (d), m < d is refused: fewer rows than unknowns cannot determine x.
    """
    if n_columns is not None:
        n_columns = check_whole_number(n_columns, "n_columns")
        m_checked = check_whole_number(m, "m")
        if m_checked < n_columns:
            raise ValueError(
                f"m: {m_checked} rows cannot determine {n_columns} unknowns; "
                f"draw at least as many rows as A has columns (m >= {n_columns})"
            )
    return sample_with_replacement(probabilities, m, seed)


def solve_weighted(A, b, sample: WeightedSample) -> np.ndarray:
    """argmin_x || sqrt(W) (A_S x - b_S) || over the sampled rows S with weights W.

    Uses numpy's lstsq (SVD): if the sampled rows do not span the columns of A (possible when
    draws repeat rows), it returns the minimum-norm solution of the subproblem rather than
    failing; that is what the benchmarks measure. Refuses a sample with fewer draws than A has
    columns.
    """
    A, b = check_problem(A, b)
    n, d = A.shape
    idx = np.asarray(sample.indices, dtype=np.int64)
    w = np.asarray(sample.weights, dtype=np.float64)
    if idx.ndim != 1 or idx.shape != w.shape:
        raise ValueError(
            f"sample: indices and weights must be 1-d and equally long, got {idx.shape} and {w.shape}"
        )
    if idx.size == 0:
        raise ValueError("sample: is empty")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"sample: row indices must lie in [0, {n}) (the rows of A), got [{idx.min()}, {idx.max()}]")
    if not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError("sample: weights must be finite and > 0")
    draws = int(np.sum(getattr(sample, "draws", np.ones_like(idx))))
    if draws < d:
        raise ValueError(
            f"sample: {draws} draw(s) cannot determine the {d} unknowns of A's columns; "
            f"sample at least m = {d} rows"
        )
    sw = np.sqrt(w)
    x, *_ = np.linalg.lstsq(A[idx] * sw[:, None], b[idx] * sw, rcond=None)
    return x


def solve_full(A, b) -> np.ndarray:
    """argmin_x ||A x - b|| on every row (numpy lstsq)."""
    A, b = check_problem(A, b)
    x, *_ = np.linalg.lstsq(A, b, rcond=None)
    return x


def relative_excess_residual(A, b, x_tilde, x_star) -> float:
    """||A x~ - b|| / ||A x* - b|| - 1: 0 for the optimum, 0.1 means a 10% larger residual norm.

    Undefined when x* fits b exactly (zero residual): raises.
    """
    A, b = check_problem(A, b)
    d = A.shape[1]
    xt = _check_vector(x_tilde, d, "x_tilde")
    xs = _check_vector(x_star, d, "x_star")
    best = float(np.linalg.norm(A @ xs - b))
    if best == 0.0:
        raise ValueError(
            "x_star: fits b exactly (zero residual), so the relative excess residual is undefined"
        )
    return float(np.linalg.norm(A @ xt - b)) / best - 1.0


# ------------------------------------------------------------------------------------------
# Clustering-based sensitivity sampling for regression
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegressionSensitivity:
    probabilities: np.ndarray  # p_i = s_i / sum(s), (n,)
    sensitivities: np.ndarray  # s_i = v_a(i) + lam * d_i^z, (n,)
    cluster_ids: np.ndarray  # a(i), (n,) int64
    sq_dist: np.ndarray  # ||e_i - c_a(i)||^2 in the clustered space, (n,)
    representatives: np.ndarray  # row of each cluster's representative (-1: empty cluster), (k,)
    cluster_losses: np.ndarray  # v_j = (a_r x0 - b_r)^2 at representative r = r_j, (k,)
    lam: float
    z: float
    proxy_x: np.ndarray  # x0, the proxy regression fitted on the pilot, (d,)
    pilot_indices: np.ndarray  # rows the proxy was fitted on (sorted)
    rows_looked_at: np.ndarray  # pilot rows U representatives: every (a_i, b_i) used beyond the clustering
    features: str  # "A" or "Ab": what was clustered

    @property
    def n_inferences(self) -> int:
        """Rows whose label b_i (and residual) were used beyond the clustering: |pilot U reps|.

        With features="Ab" the clustering itself has read every label; this count is then only
        the proxy work, and the label cost of the method is n.
        """
        return int(self.rows_looked_at.size)


def default_proxy_size(n: int, d: int) -> int:
    """max(4 d, 50) pilot rows for the proxy fit, at most n."""
    return int(min(n, max(4 * d, 50)))


def sensitivity_regression(
    A,
    b,
    n_clusters: int | None = None,
    seed: int = 0,
    *,
    lam: float | None = None,
    z: float = 2.0,
    proxy_size: int | None = None,
    features: str = "A",
    standardize: bool = False,
    n_iter: int = 25,
    training_sample_size: int | None = None,
) -> RegressionSensitivity:
    """Clustering-based sensitivity scores for the rows of a least-squares problem.

    What is computed, step by step (n rows, d columns, k = n_clusters):

    1. Embedding e_i = a_i (features="A", the default) or [a_i, b_i] (features="Ab"), float32.
       k-means on it (kmeans.fit_kmeans, seeded; training_sample_size rows, default all) and
       nearest-centroid assignment: a(i), d_i^2 = ||e_i - c_a(i)||^2.
    2. Proxy model: x0 = argmin ||A_P x - b_P|| on a uniform pilot P of proxy_size rows
       (default max(4d, 50)), drawn with its own stream of `seed`.
    3. One representative r_j per cluster (the member nearest the centroid,
       representatives.nearest_members) and its proxy loss v_j = (a_{r_j} x0 - b_{r_j})^2:
       k residual evaluations.
    4. s_i = v_a(i) + lam * d_i^z with lam = sensitivity.balanced_lambda (the loss term and the
       distance term get equal total mass) unless lam is given; if every v_j is 0 (the proxy
       fits every representative exactly, e.g. noiseless b) the balanced lam is 0 and lam = 1
       is used instead (distance-only sampling). p = s / sum(s).

    Why the rows of A (the default), not of [A | b]: the residual r_i(x) = a_i x - b_i satisfies
    |r_i(x) - r_j(x)| <= ||x|| ||a_i - a_j|| + |b_i - b_j|, so in A-space the loss is Hölder
    (z = 2, r_i^2 <= 2 r_j^2 + 2 ||x||^2 d^2) up to the label noise |b_i - b_j|, while in
    [A | b]-space it is Hölder exactly, with constant ||(x, -1)||. But clustering [A | b] reads
    every label, which removes the point of sampling when labels (or per-row loss evaluations)
    are the expensive part, and leverage scores also use A only. So the default compares like
    with like: labels are read on the pilot, the k representatives and the m sampled rows only.
    features="Ab" is there to measure what reading all labels would buy. features="whitened"
    clusters A R^-1 (`sketched_whitening`): the geometry in which leverage is a plain norm.

    Inferences: the method looks at (a_i, b_i) for |pilot U representatives| <= proxy_size + k
    rows beyond the clustering (`n_inferences`), then the m sampled rows for the final fit.
    Leverage sampling reads no label before the m sampled rows, but needs the QR of all of A.
    """
    A, b = check_problem(A, b)
    n, d = A.shape
    if features not in FEATURES:
        raise ValueError(f"features: must be one of {FEATURES}, got {features!r}")
    z = check_z(z)
    if lam is not None and (not np.isfinite(lam) or lam < 0):
        raise ValueError(f"lam: must be a finite number >= 0 (or None for balanced), got {lam!r}")
    k = default_n_clusters(n) if n_clusters is None else check_whole_number(n_clusters, "n_clusters")
    if k > n:
        raise ValueError(f"n_clusters: {k} clusters is more than the {n} rows of A")
    if proxy_size is None:
        proxy_size = default_proxy_size(n, d)
    proxy_size = check_whole_number(proxy_size, "proxy_size")
    if proxy_size < d:
        raise ValueError(
            f"proxy_size: {proxy_size} pilot rows cannot fit the {d} unknowns of the proxy "
            f"regression; use at least {d}"
        )
    if proxy_size > n:
        raise ValueError(f"proxy_size: {proxy_size} is larger than the number of rows ({n})")

    # 1. clustering
    emb = A if features == "A" else np.column_stack([A, b]) if features == "Ab" else sketched_whitening(A, seed)
    if standardize:
        sd = emb.std(axis=0)
        sd[sd == 0] = 1.0
        emb = (emb - emb.mean(axis=0)) / sd
    km = fit_kmeans(emb, k, seed=seed, n_iter=n_iter, training_sample_size=training_sample_size)
    ids, sq = assign_to_centroids(emb, km.centroids)
    sq = sq.astype(np.float64)

    # 2. proxy regression on a uniform pilot (own random stream, independent of k-means')
    rng = np.random.default_rng([int(seed) % (2**63), 1])
    pilot = np.sort(rng.choice(n, size=proxy_size, replace=False))
    x0, *_ = np.linalg.lstsq(A[pilot], b[pilot], rcond=None)

    # 3. proxy loss at each cluster's representative
    reps = nearest_members(ids, sq, k)
    v = np.zeros(k)
    has = reps >= 0
    v[has] = (A[reps[has]] @ x0 - b[reps[has]]) ** 2

    # 4. scores
    if lam is None:
        lam = balanced_lambda(v, ids, sq, z)
        if lam == 0.0 and not v.any():
            lam = 1.0
    s = sensitivity_scores(v, ids, sq, float(lam), z)
    p = sampling_probabilities(s)
    looked = np.union1d(pilot, reps[has]).astype(np.int64)
    return RegressionSensitivity(
        probabilities=p,
        sensitivities=s,
        cluster_ids=ids,
        sq_dist=sq,
        representatives=reps,
        cluster_losses=v,
        lam=float(lam),
        z=z,
        proxy_x=x0,
        pilot_indices=pilot.astype(np.int64),
        rows_looked_at=looked,
        features=features,
    )


def sensitivity_regression_probabilities(
    A,
    b,
    n_clusters: int | None = None,
    seed: int = 0,
    lam: float | None = None,
    z: float = 2.0,
    proxy_size: int | None = None,
    **kwargs,
) -> np.ndarray:
    """p from `sensitivity_regression` (see there for what is computed and what it reads)."""
    return sensitivity_regression(
        A, b, n_clusters, seed, lam=lam, z=z, proxy_size=proxy_size, **kwargs
    ).probabilities


__all__ = [
    "RegressionSensitivity",
    "check_problem",
    "default_proxy_size",
    "leverage_probabilities",
    "leverage_scores",
    "relative_excess_residual",
    "sample_rows",
    "sensitivity_regression",
    "sensitivity_regression_probabilities",
    "solve_full",
    "solve_weighted",
    "uniform_probabilities",
]
