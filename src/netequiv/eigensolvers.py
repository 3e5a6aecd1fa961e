"""Leading eigenpairs of a diffusion-map matrix by Chebyshev-filtered subspace iteration.

The symmetric diffusion-map matrix S = Q^-1/2 W Q^-1/2 is similar to a Markov matrix, so its
spectrum lies in [-1, 1], and the wanted eigenvalues crowd near 1: for 100,000 points on a surface
the eleventh is about 1 - 1e-3. ARPACK's Lanczos needs about 940 single-vector products for them
(3.3 s), and its restarts and re-orthogonalisation against a 40-vector basis cost as much again
(3.4 s).

:func:`chebyshev_eigsh` is a Chebyshev-filtered subspace iteration (ChFSI, the eigensolver of
many electronic-structure codes). It filters a block of vectors with a Chebyshev polynomial that
damps the interval [lower bound, cut] of unwanted eigenvalues and grows the wanted ones above the
cut. Almost all of its work is sparse-times-block products, which run several times faster per
vector than single products:

- the rows and columns are put in reverse Cuthill-McKee order, so each product reads nearby rows;
- the products run in torch (sparse CSR times dense, on all CPU threads), in float32 until the
  float32 round-off floor (a relative residual of about 1e-6), then in float64;
- after each filter a Rayleigh-Ritz step on the block gives Ritz pairs, residuals, the next cut
  (the block's smallest Ritz value) and the next degree (the degree at which the slowest wanted
  residual is predicted to reach the tolerance).

The returned residuals are computed in float64 on the original matrix. A solve that does not
reach the tolerance within its product budget raises :class:`EigensolverNoConvergence`.
"""

import logging
import math
import warnings

import numpy as np
import torch
from scipy import linalg, sparse
from scipy.sparse.csgraph import reverse_cuthill_mckee
from sklearn.utils import check_random_state

__all__ = ["EigensolverNoConvergence", "chebyshev_eigsh", "rayleigh_ritz", "relative_residuals"]

logger = logging.getLogger("netequiv")

# Relative residual below which the solve moves from float32 to float64 products. float32
# round-off stops the residuals near 1e-6 on the 100,000-point kernel of benchmarks/dmap_scaling.py
# with 11 eigenpairs, and near 1e-5 with 3, so the solve also moves on when the residual stalls.
FLOAT32_FLOOR = 4e-6

# Filter degrees per Rayleigh-Ritz step. The first step's cut is a guess, so its degree is low.
FIRST_DEGREE = 10
MIN_DEGREE = 8
MAX_DEGREE = 80

# Consecutive float64 steps that fall short of their predicted progress before the solve stops.
STALLED_STEPS = 3

# Lanczos steps for the estimate of the smallest eigenvalue, and the margin added below it as a
# fraction of the spectrum's width, because a Ritz value lies above the eigenvalue it approaches.
LOWER_BOUND_STEPS = 40
LOWER_BOUND_MARGIN = 0.05


class EigensolverNoConvergence(RuntimeError):
    """The Chebyshev solve did not reach its tolerance: its product budget ran out, or its
    residuals stopped falling in float64.

    Attributes
    ----------
    residuals : ndarray
        The float64 relative residuals of the best Ritz pairs reached.
    """

    def __init__(self, message, residuals):
        super().__init__(message)
        self.residuals = residuals


def chebyshev_eigsh(matrix, n_eig, *, tol=1e-7, block_size=None, max_products=None, random_state=None):
    """Return the ``n_eig`` largest eigenpairs of a symmetric sparse matrix with spectrum in [-1, 1].

    Parameters
    ----------
    matrix : sparse matrix of shape (n, n)
        Symmetric, with every eigenvalue in [-1, 1] (true for the symmetric conjugate of a Markov
        matrix). Not modified.
    n_eig : int
        Number of eigenpairs, at most ``n - 1``.
    tol : float, default=1e-7
        Target relative residual ``|S v - a v| / |a|`` of every returned pair. Tolerances below
        about 1e-13 cannot be reached in float64.
    block_size : int, default=None
        Vectors filtered together; None uses ``n_eig + max(n_eig // 2, 8)``, capped at ``n - 1``.
        More vectors lower the cut and speed up convergence, at the price of wider products.
    max_products : int, default=None
        Budget of matrix-vector products (a block product of b vectors counts b); None allows
        ``max(200_000, 2000 * block_size)``.
    random_state : int, RandomState instance or None, default=None
        Seeds the start block and the Lanczos start vector.

    Returns
    -------
    values : ndarray of shape (n_eig,)
        Eigenvalues, descending.
    vectors : ndarray of shape (n, n_eig)
        Orthonormal eigenvectors in the same order.
    residuals : ndarray of shape (n_eig,)
        Their relative residuals, computed in float64 on ``matrix``.

    Raises
    ------
    EigensolverNoConvergence
        When a residual is still above ``tol`` once the product budget is spent or once the
        float64 residuals have stopped falling for ``STALLED_STEPS`` steps.
    """
    n = matrix.shape[0]
    if not 1 <= n_eig < n:
        raise ValueError(f"n_eig={n_eig} must be between 1 and n - 1 = {n - 1}.")
    block = n_eig + max(n_eig // 2, 8) if block_size is None else int(block_size)
    block = min(max(block, n_eig), n - 1)
    budget = max(200_000, 2000 * block) if max_products is None else int(max_products)
    rng = check_random_state(random_state)

    matrix = sparse.csr_matrix(matrix, dtype=np.float64)
    order = reverse_cuthill_mckee(matrix, symmetric_mode=True)
    permuted = matrix[order][:, order].tocsr()
    permuted.sort_indices()
    operators = {np.float32: _torch_csr(permuted, torch.float32), np.float64: _torch_csr(permuted, torch.float64)}

    lower, ritz = _lanczos_estimates(permuted, rng)
    basis = torch.from_numpy(rng.standard_normal((n, block)).astype(np.float32))
    # The block-th largest Lanczos Ritz value lies at or below the block-th eigenvalue, so the
    # first filter damps no wanted eigenvalue. Without enough Ritz values the cut is the midpoint.
    cut = ritz[-block] if ritz.size >= 2 * block else lower + 0.5 * (1.0 - lower)
    degree, dtype = FIRST_DEGREE, np.float32
    products, previous, expected_drop, stalled_steps = 0, np.inf, 0.0, 0
    while True:
        operator = operators[dtype]
        filtered = _chebyshev_filter(operator, basis, degree, lower, cut)
        values, basis, residuals = _torch_rayleigh_ritz(operator, filtered)
        products += (degree + 1) * block
        worst = float(residuals[:n_eig].max())
        logger.debug(
            "Chebyshev step: %s, degree %d, cut 1 - %.2e, largest residual %.1e, %d products so far",
            np.dtype(dtype).name, degree, 1.0 - cut, worst, products,
        )
        # float32 residual estimates carry float32 round-off, so they must undercut tol by half.
        if worst <= (0.5 * tol if dtype is np.float32 else tol) or products >= budget:
            break
        # A step whose residual fell by less than a factor of 2 and by less than half of the
        # predicted factor (in log scale) has reached the round-off floor of its precision.
        stalled = np.log(previous / worst) < min(0.5 * expected_drop, np.log(2.0))
        previous = worst
        if dtype is np.float64:
            stalled_steps = stalled_steps + 1 if stalled else 0
            if stalled_steps >= STALLED_STEPS:
                break
        # The next filter damps everything up to the block's smallest Ritz value. Its degree may
        # at most double, so that the cut, a guess at first, is refined early.
        cut = float(values[-1])
        predicted, rate = _next_degree(values[:n_eig], residuals[:n_eig], lower, cut, tol)
        degree = min(2 * degree, predicted)
        if dtype is np.float32 and (worst <= FLOAT32_FLOOR or stalled):
            # The predicted degree models the slow components near the cut, not the float32
            # round-off, so the first float64 filter starts low.
            dtype, degree, previous = np.float64, min(degree, FIRST_DEGREE), np.inf
            basis = basis.double()
        expected_drop = degree * rate

    # A final float64 Rayleigh-Ritz step on the original ordering gives the returned residuals.
    vectors = np.empty((n, block))
    vectors[order] = basis.double().numpy()
    values, vectors = rayleigh_ritz(matrix, vectors)
    values, vectors = values[:n_eig], vectors[:, :n_eig]
    residuals = relative_residuals(matrix, values, vectors)
    if residuals.max() > tol:
        reason = (
            f"spent its budget of {budget} products"
            if products >= budget
            else f"stopped improving after {products} products"
        )
        raise EigensolverNoConvergence(
            f"the Chebyshev solve {reason} with a largest relative residual of "
            f"{residuals.max():.1e}, above tol={tol:.1e}.",
            residuals,
        )
    return values, vectors, residuals


def relative_residuals(matrix, values, vectors):
    """Return ``|S v_k - a_k v_k| / (|a_k| |v_k|)`` for each column v_k of ``vectors``."""
    residual = matrix @ vectors - vectors * values
    norms = np.linalg.norm(residual, axis=0) / np.linalg.norm(vectors, axis=0)
    with np.errstate(divide="ignore"):
        return norms / np.abs(values)


def _torch_csr(matrix, dtype):
    """Wrap a scipy CSR matrix as a torch sparse CSR tensor with int32 indices (no index copy)."""
    indptr = torch.from_numpy(matrix.indptr.astype(np.int32, copy=False))
    indices = torch.from_numpy(matrix.indices.astype(np.int32, copy=False))
    data = torch.from_numpy(matrix.data).to(dtype)
    with warnings.catch_warnings():
        # torch calls its sparse CSR support beta; sparse times dense is all that is used here.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(indptr, indices, data, size=matrix.shape, check_invariants=False)


def _lanczos_estimates(matrix, rng):
    """Return a lower bound of the spectrum, clipped at -1, and the Ritz values of a short Lanczos run.

    The smallest Ritz value lies above the smallest eigenvalue, so the bound subtracts the Ritz
    pair's residual and a margin of ``LOWER_BOUND_MARGIN`` times the spectrum's width.
    """
    n = matrix.shape[0]
    steps = min(LOWER_BOUND_STEPS, n - 1)
    basis = np.empty((steps + 1, n))
    vector = rng.standard_normal(n)
    basis[0] = vector / np.linalg.norm(vector)
    alphas, betas = np.empty(steps), np.empty(steps)
    for j in range(steps):
        w = matrix @ basis[j]
        alphas[j] = basis[j] @ w
        # Full re-orthogonalisation is cheap on a basis this small and avoids spurious Ritz copies.
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        betas[j] = np.linalg.norm(w)
        if betas[j] <= 1e-12:
            steps = j + 1
            break
        basis[j + 1] = w / betas[j]
    ritz, rotation = linalg.eigh_tridiagonal(alphas[:steps], betas[: steps - 1])
    smallest = ritz[0] - abs(betas[steps - 1] * rotation[-1, 0])
    return max(-1.0, smallest - LOWER_BOUND_MARGIN * (1.0 - smallest)), ritz


def _chebyshev_filter(operator, block, degree, lower, cut):
    """Apply the scaled Chebyshev polynomial of ``degree`` on [lower, cut] to ``block``.

    The three-term recurrence is scaled so that the polynomial stays near 1 at 1, the top of the
    spectrum, and a high degree cannot overflow float32.
    """
    center, half_width = 0.5 * (cut + lower), 0.5 * (cut - lower)
    sigma_1 = half_width / (1.0 - center)
    sigma = sigma_1
    previous = block
    # current = (S - c) block * sigma_1 / e
    current = torch.addmm(block, operator, block, beta=-center * sigma_1 / half_width, alpha=sigma_1 / half_width)
    for _ in range(1, degree):
        sigma_next = 1.0 / (2.0 / sigma_1 - sigma)
        scale = 2.0 * sigma_next / half_width
        # next = (S - c) current * 2 sigma' / e - sigma sigma' previous
        shifted = torch.add(previous, current, alpha=-center * scale / (-sigma * sigma_next))
        shifted.mul_(-sigma * sigma_next)
        previous, current = current, torch.addmm(shifted, operator, current, beta=1.0, alpha=scale)
        sigma = sigma_next
    return current


def _torch_rayleigh_ritz(operator, block):
    """Orthonormalise ``block`` and return its Ritz values (descending), vectors and residuals."""
    basis = torch.linalg.qr(block.double())[0].to(block.dtype)
    product = operator @ basis
    projected = (basis.T @ product).double().numpy()
    values, rotation = linalg.eigh(0.5 * (projected + projected.T))
    values, rotation = values[::-1].copy(), torch.from_numpy(rotation[:, ::-1].copy()).to(block.dtype)
    vectors = basis @ rotation
    residual = product @ rotation - vectors * torch.from_numpy(values).to(block.dtype)
    norms = torch.linalg.vector_norm(residual, dim=0).double().numpy()
    with np.errstate(divide="ignore"):
        return values, vectors, norms / np.abs(values)


def rayleigh_ritz(matrix, vectors):
    """Return the Ritz values (descending) and Ritz vectors of ``matrix`` on the span of ``vectors``.

    The projection runs in float64 with scipy, so it also refines vectors found in float32.
    """
    basis, _ = np.linalg.qr(vectors)
    projected = basis.T @ (matrix @ basis)
    values, rotation = linalg.eigh(0.5 * (projected + projected.T))
    return values[::-1], basis @ rotation[:, ::-1]


def _next_degree(values, residuals, lower, cut, tol):
    """Return the degree at which the slowest residual is predicted to fall to ``tol``, and its rate.

    The filter multiplies an eigencomponent at a > cut by about ``exp(degree * arccosh(x))``,
    ``x = (a - c) / e``, relative to the damped interval, and residuals fall with it.
    """
    center, half_width = 0.5 * (cut + lower), 0.5 * (cut - lower)
    x = np.maximum((values - center) / half_width, 1.0 + 1e-12)
    rates = np.arccosh(x)
    # Aim at a quarter of tol: the prediction ignores the damped components, so aiming at tol
    # itself ends in a tail of short steps.
    needed = np.log(np.maximum(4.0 * residuals / tol, 1.0)) / rates
    unconverged = residuals > tol
    if not np.any(unconverged):
        return MIN_DEGREE, float(rates.min())
    degree = int(np.clip(math.ceil(needed[unconverged].max()), MIN_DEGREE, MAX_DEGREE))
    return degree, float(rates[unconverged].min())
