"""diffloss.gaussian against scipy's normal density."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffloss.gaussian import LOG_2PI, gaussian_log_pdf


def test_log_2pi():
    assert LOG_2PI == pytest.approx(1.8378770664093453, abs=1e-15)


def test_elementwise_and_diagonal_match_scipy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64) * 3
    mean = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    log_var = torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64)
    expected = stats.norm.logpdf(x.numpy(), mean.numpy(), np.exp(0.5 * log_var.numpy()))
    np.testing.assert_allclose(gaussian_log_pdf(x, mean, log_var).numpy(), expected, rtol=1e-13)
    np.testing.assert_allclose(gaussian_log_pdf(x, mean, log_var, sum_last=True).numpy(), expected.sum(-1), rtol=1e-13)


def test_float_parameters_and_dtype():
    x = torch.tensor([[0.0, 1.0]], dtype=torch.float32)
    out = gaussian_log_pdf(x, 1.0, math.log(4.0))  # N(1, 2^2)
    assert out.dtype == torch.float32
    expected = stats.norm.logpdf([0.0, 1.0], 1.0, 2.0)
    np.testing.assert_allclose(out[0].numpy(), expected, rtol=1e-6)
