"""The closed form against independent float64 solves of the constrained least-squares problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rewrite.core.keys import directions
from rewrite.core.problem import EditProblem
from rewrite.core.request import EditRequest
from rewrite.core.site import Captured, EditSite
from rewrite.generators.base import GeneratorAdapter
from rewrite.strategies.closed_form import ClosedForm


def random_spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 3 * n, generator=g, dtype=torch.float64)
    return a @ a.T / (3 * n)


def hand_problem(layer: nn.Module, keys: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                 c: torch.Tensor, context: torch.Tensor) -> EditProblem:
    """An EditProblem built directly from tensors (no generator run), for one bare layer."""
    adapter = GeneratorAdapter(nn.Sequential(layer), z_shape=(1,), name="bare")
    site = EditSite(adapter, "0")
    with torch.no_grad():
        out0 = site.layer_forward(keys, site.weight)
    req = EditRequest.from_dict({"copy": {"seed": 0, "box": [0, 0, 1, 1]}, "paste": {"seed": 0, "box": [0, 0, 1, 1]}})
    return EditProblem(site, req, 1, torch.zeros(1, 1), torch.zeros(1, 1), Captured(keys, out0, out0), target,
                       weight, target, weight, torch.zeros(1, 3, 1, 1), torch.ones(1, 1), context, context, c.float())


def kkt_solution(w0: torch.Tensor, k: torch.Tensor, v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """argmin tr(ΔW C ΔWᵀ) s.t. (W0 + ΔW) K = V, by solving the KKT system of vec(ΔW) in float64."""
    out, d = w0.shape
    n = k.shape[1]
    h = torch.kron(torch.eye(out, dtype=torch.float64), c)  # vec row-major: x[o*d + i] = ΔW[o, i]
    a = torch.kron(torch.eye(out, dtype=torch.float64), k.T.contiguous())  # (out*n, out*d): rows (o, j) -> ΔW[o] · k_j
    r = (v - w0 @ k).reshape(-1)
    m = out * n
    kkt = torch.zeros(out * d + m, out * d + m, dtype=torch.float64)
    kkt[: out * d, : out * d] = 2 * h
    kkt[: out * d, out * d :] = a.T
    kkt[out * d :, : out * d] = a
    rhs = torch.cat([torch.zeros(out * d, dtype=torch.float64), r])
    return torch.linalg.solve(kkt, rhs)[: out * d].reshape(out, d)


def test_linear_rank_one_matches_kkt_and_paper_formula() -> None:
    torch.manual_seed(1)
    layer = nn.Linear(6, 4, bias=True).double()
    c = random_spd(6, 0)
    k = torch.randn(1, 6, dtype=torch.float64)
    v = torch.randn(1, 4, dtype=torch.float64)
    p = hand_problem(layer, k[:, :, None, None], v, torch.ones(1, 1), c, k)
    res = ClosedForm(rank=1).run(p)
    w1 = res.weights["0.weight"]
    w0 = layer.weight.detach().clone()
    expected = w0 + kkt_solution(w0, k.T, (v - layer.bias.detach()).T, c)
    torch.testing.assert_close(w1, expected, rtol=1e-4, atol=1e-6)
    # The paper's closed form: Λ = (v* − W0 k*) / (dᵀ k*), d = C⁻¹ k*.
    d = torch.linalg.solve(c, k.T)
    lam = ((v - layer(k)).T) / (d.T @ k.T)
    torch.testing.assert_close(w1 - w0, lam @ d.T, rtol=1e-4, atol=1e-6)
    # Constraint residual: the new memory returns v* for k*.
    torch.testing.assert_close(F.linear(k, w1, layer.bias), v, rtol=0, atol=1e-8)


def test_pointwise_conv_several_keys_is_the_constrained_minimum() -> None:
    torch.manual_seed(2)
    layer = nn.Conv2d(8, 5, 1).double()
    c = random_spd(8, 1)
    k = torch.randn(8, 3, dtype=torch.float64)  # three keys at three positions
    v = torch.randn(5, 3, dtype=torch.float64)
    keys = k[None, :, None, :].contiguous()  # (1, 8, 1, 3): three keys at three positions
    target = v[None, :, None, :].contiguous()
    p = hand_problem(layer, keys, target, torch.ones(1, 3), c, k.T)
    dw = ClosedForm(rank=3).run(p).weights["0.weight"][:, :, 0, 0] - layer.weight.detach()[:, :, 0, 0]
    w0, b = layer.weight.detach()[:, :, 0, 0], layer.bias.detach()[:, None]
    ref = kkt_solution(w0, k, v - b, c)
    torch.testing.assert_close(dw, ref, rtol=1e-4, atol=1e-6)
    assert torch.allclose((w0 + dw) @ k + b, v, atol=1e-8)  # constraint residual
    # Minimal E‖ΔW k‖² among feasible updates: beats the minimum-Frobenius-norm feasible update.
    other = (v - b - w0 @ k) @ torch.linalg.pinv(k)
    assert torch.allclose((w0 + other) @ k + b, v, atol=1e-8)
    assert torch.trace(dw @ c @ dw.T) <= torch.trace(other @ c @ other.T) + 1e-12


@pytest.mark.parametrize("kind", ["conv", "convtranspose"])
def test_spatial_closed_form_matches_dense_least_squares(kind: str) -> None:
    """Λ equals a dense float64 lstsq whose columns come from running the real layer with W0 + E Dᵀ."""
    torch.manual_seed(3)
    if kind == "conv":
        layer = nn.Conv2d(6, 4, 3, padding=1).double()
        keys = torch.randn(1, 6, 5, 5, dtype=torch.float64)
        hw = (5, 5)
    else:
        layer = nn.ConvTranspose2d(6, 4, 4, 2, 1).double()
        keys = torch.randn(1, 6, 4, 4, dtype=torch.float64)
        hw = (8, 8)
    weight = torch.zeros(hw, dtype=torch.float64)
    weight[1:4, 1:5] = torch.rand(3, 4, dtype=torch.float64) + 0.5
    target = torch.randn(1, 4, *hw, dtype=torch.float64)
    c = random_spd(6, 2)
    ctx = keys[0, :, 1:3, 1:3].reshape(6, -1).T
    p = hand_problem(layer, keys, target, weight, c, ctx)
    strat = ClosedForm(rank=2)
    res = strat.run(p)
    d = directions(ctx, c, rank=2)
    w0 = layer.weight.detach().clone()
    in_axis = 0 if kind == "convtranspose" else 1
    lam_shape = list(w0.shape)
    lam_shape[in_axis] = 2
    # Dense design matrix from the module itself: one column per unit Λ (all output channels at once).
    out0 = layer(keys).detach()
    cols = []
    n_lam = int(torch.tensor(lam_shape).prod())
    for j in range(n_lam):
        e = torch.zeros(n_lam, dtype=torch.float64)
        e[j] = 1
        e = e.reshape(lam_shape)
        dw = torch.einsum("ir,orhw->oihw" if in_axis == 1 else "ir,rohw->iohw", d, e)
        with torch.no_grad():
            layer.weight.copy_(w0 + dw)
            cols.append((layer(keys) - out0).reshape(-1))
            layer.weight.copy_(w0)
    a = torch.stack(cols, 1)
    sw = weight.expand(4, *hw).reshape(-1).sqrt()
    sel = sw > 0
    x = torch.linalg.lstsq(a[sel] * sw[sel, None], ((target - out0).reshape(-1) * sw)[sel, None]).solution[:, 0]
    assert res.delta is not None
    torch.testing.assert_close(res.delta.lam.double().reshape(-1), x, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.weights["0.weight"], w0 + torch.einsum(
        "ir,orhw->oihw" if in_axis == 1 else "ir,rohw->iohw", d, x.reshape(lam_shape)), rtol=1e-4, atol=1e-6)


def test_zca_direction_is_c_inverse_k() -> None:
    c = random_spd(7, 4)
    k = torch.randn(1, 7, dtype=torch.float64)
    d = directions(k, c, rank=1, method="zca", ridge=0.0)[:, 0]
    ref = torch.linalg.solve(c, k[0])
    ref = ref / ref.norm()
    assert torch.allclose(d.abs(), ref.abs(), atol=1e-8) and abs(float(d @ ref)) > 1 - 1e-10
    # mean: C⁻¹ mean(K); identity: the top singular direction of K itself.
    ks = torch.randn(5, 7, dtype=torch.float64)
    m = torch.linalg.solve(c, ks.mean(0))
    assert abs(float(directions(ks, c, 1, "mean", ridge=0.0)[:, 0] @ (m / m.norm()))) > 1 - 1e-10
    u = torch.linalg.svd(ks.T)[0][:, 0]
    assert abs(float(directions(ks, c, 1, "identity")[:, 0] @ u)) > 1 - 1e-10


@pytest.mark.parametrize("n", [3, 40])  # fewer keys than channels (n×n path) and many more (in×in path)
def test_zca_directions_match_an_explicit_whitening(n: int) -> None:
    """zca spans C^{-1/2}·(top-r left singular vectors of C^{-1/2}K), with C^{-1/2} formed explicitly here from
    C's eigendecomposition: both code paths must give that span (and the same D, signs fixed)."""
    c = random_spd(9, 6)
    k = torch.randn(n, 9, dtype=torch.float64) @ torch.randn(9, 9, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(c)
    c_inv_half = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    u = torch.linalg.svd(c_inv_half @ k.T, full_matrices=False)[0][:, :2]
    ref = torch.linalg.qr(c_inv_half @ u)[0]
    d = directions(k, c, rank=2, method="zca", ridge=0.0)
    assert torch.allclose(ref @ (ref.T @ d), d, atol=1e-9)  # d lies in the reference span
    assert torch.allclose(d.T @ d, torch.eye(2, dtype=torch.float64), atol=1e-10)


def test_rank_larger_than_keys_is_a_clear_error() -> None:
    c = random_spd(5, 5)
    with pytest.raises(ValueError, match="larger than the number of keys"):
        directions(torch.randn(2, 5, dtype=torch.float64), c, rank=3)


@pytest.mark.parametrize("layer_kind", ["conv", "convT"])
def test_memory_weighted_closed_form_is_the_stationary_point(layer_kind: str) -> None:
    """With memory_weight the solve minimises relative residual + μ·tr(ΔW C ΔWᵀ)/tr(W0 C W0ᵀ): its gradient,
    taken by autograd through the layer itself, vanishes there; and Λ shrinks as μ grows."""
    from tests.conftest import tiny_problem

    p = tiny_problem() if layer_kind == "convT" else tiny_problem(layer="main.7", value_at=None)
    site, mu = p.site, 3.0
    d = p.directions(2, "zca").double()
    lam0 = ClosedForm(rank=2).run(p).delta.lam.double()
    lam = ClosedForm(rank=2, memory_weight=mu).run(p).delta.lam.double().requires_grad_(True)
    keys, w0, alpha = p.keys.double(), site.weight.detach().double(), p.layer_weight.double()
    target = p.target_layer_out.double()
    bias = site.layer.bias.double() if site.layer.bias is not None else None

    def residual(delta: torch.Tensor) -> torch.Tensor:
        op = F.conv2d if layer_kind == "conv" else F.conv_transpose2d
        out = op(keys, w0 + delta, bias, site.layer.stride, site.layer.padding)
        return ((out - target).pow(2).sum(1) * alpha).sum()

    dw = site.expand(lam, d)
    w_rows, dw_rows = w0.movedim(site.in_axis, -1), dw.movedim(site.in_axis, -1)
    c = p.covariance.double()
    memory = torch.einsum("...i,ij,...j->", dw_rows, c, dw_rows) / torch.einsum("...i,ij,...j->", w_rows, c, w_rows)
    objective = residual(dw) / residual(torch.zeros_like(w0)) + mu * memory
    (grad,) = torch.autograd.grad(objective, lam)
    assert float(grad.abs().max()) < 1e-6 * max(1.0, float(lam.detach().abs().max()))
    assert float(lam.norm()) < float(lam0.norm())
