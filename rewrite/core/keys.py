"""Update directions D from the keys that should trigger the new rule.

The optimal insertion of key→value pairs into a linear memory changes W only along
`D_S = C⁻¹ K_S` (Bau et al. 2020). These functions reduce D_S to r orthonormal columns:

* `zca` (default): whiten the keys with C^{-1/2}, take the top-r singular directions, map back with
  C^{-1/2} (computed through a Cholesky solve and an n×n eigenproblem, never C^{-1/2} itself); for
  one key and r = 1 this is exactly C⁻¹k*.
* `svd`: top-r left singular vectors of C⁻¹K_S (no whitening before the SVD).
* `mean`: C⁻¹ mean(K_S) (rank 1 only).
* `identity`: C replaced by the identity, i.e. top-r singular vectors of K_S (ablation: no covariance).
"""

from __future__ import annotations

import torch
from torch import Tensor

KEY_METHODS = ("zca", "svd", "mean", "identity")


def _regularized(c: Tensor, ridge: float) -> Tensor:
    """C + ridge·mean(diag C)·I: keeps C⁻¹ finite when some channels never fire (dead ReLUs)."""
    scale = c.diagonal().mean().clamp_min(torch.finfo(c.dtype).tiny)
    return c + ridge * scale * torch.eye(c.shape[0], dtype=c.dtype, device=c.device)


def _top_left_singular(m: Tensor, rank: int) -> Tensor:
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    if (s[:rank] <= s[0] * 1e-10).any():
        raise ValueError(f"the keys span fewer than rank={rank} independent directions")
    return u[:, :rank]


def _check_span(evals: Tensor, rank: int) -> None:
    """Eigenvalues in ascending order: the top `rank` must be clearly nonzero."""
    if (evals.flip(0)[:rank] <= evals[-1] * 1e-12).any():
        raise ValueError(f"the keys span fewer than rank={rank} independent directions")


def _zca_few_keys(k: Tensor, c_inv_k: Tensor, rank: int) -> Tensor:
    """zca through the n×n Gram matrix Kᵀ C⁻¹ K (cheap when there are fewer keys than channels): its top
    eigenvectors V are the top right singular vectors of C^{-1/2}K, and C^{-1/2}·(C^{-1/2}K V) = C⁻¹K V."""
    evals, evecs = torch.linalg.eigh(k.T @ c_inv_k)
    _check_span(evals, rank)
    return c_inv_k @ evecs.flip(1)[:, :rank]


def _zca_many_keys(k: Tensor, chol: Tensor, rank: int) -> Tensor:
    """zca through the in×in matrix M Mᵀ, M = L⁻¹K with C = L Lᵀ (cheap when keys outnumber channels, as with
    many context regions): M = U S Vᵀ gives C⁻¹K V = L⁻ᵀ M V = L⁻ᵀ U S, so the span is that of L⁻ᵀ U."""
    m = torch.linalg.solve_triangular(chol, k, upper=False)
    evals, evecs = torch.linalg.eigh(m @ m.T)
    _check_span(evals, rank)
    return torch.linalg.solve_triangular(chol.T, evecs.flip(1)[:, :rank], upper=True)


def directions(keys: Tensor, c: Tensor, rank: int = 1, method: str = "zca", ridge: float = 1e-6) -> Tensor:
    """D (in, rank) with orthonormal columns spanning the top-`rank` part of C⁻¹ K_S.

    `keys` is (n, in): one row per key that should trigger the rule.
    """
    if method not in KEY_METHODS:
        raise ValueError(f"key method must be one of {KEY_METHODS}, got {method!r}")
    if keys.dim() != 2 or keys.shape[1] != c.shape[0]:
        raise ValueError(f"keys must be (n, {c.shape[0]}), got {tuple(keys.shape)}")
    n = keys.shape[0]
    if n == 0:
        raise ValueError("no keys: the context region selects no position at this layer")
    if rank < 1:
        raise ValueError(f"rank must be ≥ 1, got {rank}")
    if rank > n:
        raise ValueError(f"rank={rank} is larger than the number of keys ({n}) at this layer")
    if rank > c.shape[0]:
        raise ValueError(f"rank={rank} is larger than the key dimension ({c.shape[0]})")
    bad_c = 0 if method == "identity" else int((~torch.isfinite(c)).sum())  # 'identity' never reads C
    bad_k = int((~torch.isfinite(keys)).sum())
    if bad_c or bad_k:
        raise ValueError(f"key statistics contain NaN/Inf ({bad_c} entries of C, {bad_k} of the keys); "
                         "recompute them from a generator whose keys at this layer are finite")
    k = keys.to(torch.float64).T  # (in, n)
    if method == "identity":
        d = _top_left_singular(k, rank)
    else:
        try:
            chol = torch.linalg.cholesky(_regularized(c.to(torch.float64), ridge))
        except torch.linalg.LinAlgError as e:
            raise ValueError(f"key statistics C + ridge is not positive definite (ridge={ridge}): {e}. "
                             "Collect statistics over more samples or use a larger ridge") from e
        if method == "mean":
            if rank != 1:
                raise ValueError("key method 'mean' gives one direction; use rank=1")
            d = torch.cholesky_solve(k.mean(1, keepdim=True), chol)
        else:
            c_inv_k = torch.cholesky_solve(k, chol)  # D_S = C⁻¹ K_S
            if method == "svd":
                d = _top_left_singular(c_inv_k, rank)
            else:
                d = (_zca_few_keys(k, c_inv_k, rank) if n <= k.shape[0] else _zca_many_keys(k, chol, rank))
    q, _ = torch.linalg.qr(d)
    # A fixed sign (largest |entry| positive) so the same inputs give the same D everywhere.
    idx = q.abs().argmax(0)
    q = q * torch.sign(q[idx, torch.arange(q.shape[1])])
    return q
