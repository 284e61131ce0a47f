"""Closed-form scores: every target that overrides ``SamplingTarget.score`` equals the autograd score of its
``log_prob`` (float64, random points including the tails), and stays differentiable in x (rKL-R)."""

from __future__ import annotations

import pytest
import torch

from diffloss.bridge.targets import SAMPLING_TARGETS, SamplingTarget, get_sampling_target

CLOSED_FORM = [n for n in SAMPLING_TARGETS if type(get_sampling_target(n)).score is not SamplingTarget.score]


def points(target: SamplingTarget, generator: torch.Generator) -> torch.Tensor:
    """Points near the target (its reference samples or modes where it has them, else N(0, 1)) and in its tails
    (N(0, 5^2), and 4x the spread of the mixtures' modes)."""
    d = target.dim
    near = torch.randn(8, d, generator=generator, dtype=torch.float64)
    modes = target.modes()
    if modes is not None:
        near = modes[torch.randint(len(modes), (8,), generator=generator)] + near
        tails = 4 * modes[torch.randint(len(modes), (8,), generator=generator)] + 5 * near
    else:
        tails = 5 * torch.randn(8, d, generator=generator, dtype=torch.float64)
    return torch.cat([near, tails])


def test_every_target_named_has_a_closed_form():
    named = {"gmm40", "mos", "funnel", "many_well", "sonar", "ionosphere", "german_credit", "seeds", "brownian", "lgcp"}
    assert named <= set(CLOSED_FORM)


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_closed_form_score_equals_autograd(name):
    target = get_sampling_target(name)
    x = points(target, torch.Generator().manual_seed(0))
    got, ref = target.score(x), SamplingTarget.score(target, x)
    assert got.shape == x.shape and got.dtype == torch.float64
    scale = ref.abs().amax(1, keepdim=True).clamp(min=1.0)
    assert ((got - ref).abs() / scale).max() < 1e-5


@pytest.mark.parametrize("name", ["gmm40", "funnel", "seeds", "brownian"])
def test_closed_form_score_is_differentiable_like_autograd(name):
    """The rKL-R path differentiates the score in x: the Hessian-vector products agree too."""
    target = get_sampling_target(name)
    x = points(target, torch.Generator().manual_seed(1))[:4].requires_grad_(True)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (hv,) = torch.autograd.grad((target.score(x) * v).sum(), x)
    (hv_ref,) = torch.autograd.grad((SamplingTarget.score(target, x, create_graph=True) * v).sum(), x)
    scale = hv_ref.abs().amax(1, keepdim=True).clamp(min=1.0)
    assert ((hv - hv_ref).abs() / scale).max() < 1e-5


def test_gmm40_score_in_float32_close_to_float64():
    target = get_sampling_target("gmm40")
    x = points(target, torch.Generator().manual_seed(3))
    assert torch.allclose(target.score(x.float()).double(), target.score(x), atol=1e-3, rtol=1e-5)
