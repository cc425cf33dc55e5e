"""The W+ fit of rewrite.toyworld.models.invert: it lowers the error, and its per-class L1 is right."""

from __future__ import annotations

import torch

from rewrite.toyworld import CLASSES, Z_DIM
from rewrite.toyworld.models.generator import build_toy_generator
from rewrite.toyworld.models.invert import class_l1, fit_w_plus


def test_fit_w_plus_lowers_l1_and_leaves_the_weights() -> None:
    torch.manual_seed(0)
    g = build_toy_generator({"w_dim": 16, "channels": {4: 8, 8: 8, 16: 8, 32: 8, 64: 8}}).requires_grad_(False)
    before_weights = [p.clone() for p in g.parameters()]
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = g.style(z)
        target = g(torch.randn(2, Z_DIM)).clamp(-1, 1)  # another image the same synthesis can draw
        start = float((g(w, input_is_latent=True) - target).abs().mean())
    fitted = fit_w_plus(g, w, target, steps=40, lr=0.05)
    assert fitted.shape == (2, g.n_latent, 16)
    with torch.no_grad():
        end = float((g(fitted, input_is_latent=True) - target).abs().mean())
    assert end < 0.7 * start
    assert all(torch.equal(a, b) for a, b in zip(before_weights, g.parameters(), strict=True))


def test_class_l1_against_a_direct_count() -> None:
    truth = torch.zeros(1, 3, 2, 2)
    images = torch.tensor([[[[0.3, 0.0], [0.0, 0.6]]]]).repeat(1, 3, 1, 1)
    labels = torch.tensor([[[0, 1], [1, 2]]])
    got = class_l1(images, truth, labels)
    assert set(got) == set(CLASSES[:3])
    assert abs(got[CLASSES[0]] - 0.3) < 1e-6 and abs(got[CLASSES[1]]) < 1e-6 and abs(got[CLASSES[2]] - 0.6) < 1e-6
