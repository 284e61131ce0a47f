"""EDM preconditioning against independent values: Table 1's formulas, the exact posterior mean on Gaussian data,
EDM's loss written out by hand, and the same x0-unit loss as a raw network making the same predictions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from diffloss.cli import cli
from diffloss.density import get_density
from diffloss.errors import DifflossError
from diffloss.losses import diffusion_loss
from diffloss.models import Denoiser
from diffloss.precond import edm_precond
from diffloss.process import get_process
from diffloss.target import expand_like, get_target
from diffloss.weighting import get_weighting

MLP = {"name": "mlp", "width": 16, "depth": 1}
LEVELS = get_density("uniform-logsnr", lam_min=-6, lam_max=6)  # s in [0.05, 20]


class Constant(nn.Module):
    """A backbone that ignores its input and returns ``value`` (B, D): F = 0, or F set to a chosen function."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor, label: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        return self.value.to(x).expand_as(x)


def denoiser(process: str, target: str, precond: str, dim: int, sigma_data: float = 0.5, seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(MLP, (dim,), get_process(process), sigma_data, precond, get_target(target))


@pytest.mark.parametrize("sd", [0.2, 0.5, 1.0, 3.0])
def test_coefficients_are_table_1(sd):
    s = [0.002, 0.05, 0.5, 1.0, 7.0, 80.0]
    c_skip, c_out, c_in, c_noise = edm_precond(torch.tensor(s, dtype=torch.float64), sd)
    assert c_skip.tolist() == pytest.approx([sd**2 / (v**2 + sd**2) for v in s], rel=1e-14)
    assert c_out.tolist() == pytest.approx([v * sd / math.sqrt(v**2 + sd**2) for v in s], rel=1e-14)
    assert c_in.tolist() == pytest.approx([1 / math.sqrt(v**2 + sd**2) for v in s], rel=1e-14)
    assert c_noise.tolist() == pytest.approx([math.log(v) / 4 for v in s], rel=1e-14)


def test_formulation_json_has_the_coefficients(tmp_path):
    out = tmp_path / "f.json"
    args = ["formulation", "--process", "vp", "--precond", "edm", "--sigma-data", "0.7", "--sigmas", "0.1,1,10"]
    r = CliRunner().invoke(cli, [*args, "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["levels"]
    for row, s in zip(rows, (0.1, 1.0, 10.0)):
        assert row["nsr"] == s and row["factor_eps"] == pytest.approx(1 / s**2)  # today's fields stay
        assert row["c_skip"] == pytest.approx(0.49 / (s**2 + 0.49), rel=1e-14)
        assert row["c_out"] == pytest.approx(0.7 * s / math.sqrt(s**2 + 0.49), rel=1e-14)
        assert row["c_in"] == pytest.approx(1 / math.sqrt(s**2 + 0.49), rel=1e-14)
        assert row["c_noise"] == pytest.approx(math.log(s) / 4, abs=1e-15)
    r = CliRunner().invoke(cli, ["formulation", "--sigmas", "1", "--json", str(out)])
    assert "c_skip" not in json.loads(out.read_text())["levels"][0]  # only with --precond edm
    r = CliRunner().invoke(cli, ["formulation", "--precond", "karras", "--json", str(tmp_path / "g.json")])
    assert r.exit_code == 2 and r.output.startswith("Error: unknown preconditioning")
    assert len(r.output.splitlines()) == 1
    assert not (tmp_path / "g.json").exists()


@pytest.mark.parametrize("process", ["vp", "vp-cosine", "ve", "edm", "flow"])
@pytest.mark.parametrize("target", ["x0", "eps", "v", "flow"])
def test_zero_network_is_the_exact_posterior_mean_on_gaussian_data(process, target):
    """F = 0 and x0 ~ N(0, sd^2 I): D = c_skip * x~ is E[x0 | x_t], its x0 loss s^2 sd^2 / (s^2 + sd^2) per dim."""
    sd, dim = 0.7, 20000
    d = denoiser(process, target, "edm", dim, sd)
    d.net = Constant(torch.zeros(dim))
    g = torch.Generator().manual_seed(1)
    x0 = sd * torch.randn(16, dim, generator=g)
    x0_loss = get_weighting("constant", on="x0")  # on any target: w_target = 1 / factor, i.e. the x0 MSE
    p = get_process(process)
    loss, levels = diffusion_loss(d, x0, process=p, target=get_target(target), weighting=x0_loss, density=LEVELS,
                                  generator=g)  # fmt: skip
    s2 = levels.nsr**2
    assert torch.allclose(loss.double(), s2 * sd**2 / (s2 + sd**2), rtol=0.05)  # Monte Carlo: 1% stderr
    # and exactly D = sd^2 / (s^2 + sd^2) * x_t / alpha, as a prediction of x0
    x_t, t = torch.randn(3, dim, generator=g), levels.t[:3]
    a, sg = p.alpha_sigma(t)
    x0_hat = get_target(target).to_x0_eps(d(x_t, t).double(), x_t.double(), a[:, None], sg[:, None])[0]
    expected = (sd**2 / ((sg / a) ** 2 + sd**2) / a)[:, None] * x_t.double()
    assert torch.allclose(x0_hat, expected, rtol=1e-4, atol=1e-5)


def test_edm_recipe_is_exactly_edms_loss():
    """--weighting edm, --target x0, --precond edm: lambda(sigma) * |D - x0|^2 with D written out from Table 1, and
    unit weight on the network's own error against its effective target (NVlabs/edm EDMLoss, per-dimension mean)."""
    sd, dim = 0.5, 6
    d = denoiser("edm", "x0", "edm", dim, sd)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(64, dim, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    loss, levels = diffusion_loss(d, x0, process=get_process("edm"), target=get_target("x0"),
                                  weighting=get_weighting("edm"), density=get_density("edm-lognormal"), generator=g,
                                  noise=noise)  # fmt: skip
    sigma = levels.t[:, None]  # EDM: alpha = 1, t = sigma
    y = (x0 + sigma * noise).double()
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in = 1 / (sigma**2 + sd**2).sqrt()
    with torch.no_grad():
        f = d.net((c_in * y).float(), (1000 * sigma.log() / 4).float().reshape(-1)).double()
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    edm_loss = (weight * (c_skip * y + c_out * f - x0) ** 2).mean(1)
    assert torch.allclose(loss.double(), edm_loss, rtol=1e-5)
    f_target = (x0 - c_skip * y) / c_out
    assert torch.allclose(loss.double(), ((f - f_target) ** 2).mean(1), rtol=1e-5)


@pytest.mark.parametrize(
    "process, target, weighting",
    [("vp", "eps", "min-snr"), ("vp-cosine", "v", "debiased"), ("flow", "flow", "constant:flow"), ("edm", "x0", "edm"),
     ("ve", "score", "snr")],
)  # fmt: skip
def test_preconditioned_and_raw_networks_log_the_same_loss_for_the_same_predictions(process, target, weighting):
    """Give the preconditioned network the F that makes its D the raw network's implied x0: both log the same
    weighted target loss, which is w_x0 * (x0 MSE)."""
    dim, n = 8, 32
    p, tgt = get_process(process), get_target(target)
    name, _, on = weighting.partition(":")
    w = get_weighting(name, **({"on": on} if on else {}))
    raw, pre = denoiser(process, target, "none", dim), denoiser(process, target, "edm", dim, seed=1)
    x0 = torch.randn(n, dim, generator=torch.Generator().manual_seed(5)) * 0.6
    g = torch.Generator().manual_seed(7)
    levels = LEVELS.sample(n, g, p)
    noise = torch.randn(x0.shape, generator=g)
    a, sg = (expand_like(v, x0) for v in p.alpha_sigma(levels.t))
    x_t = a * x0 + sg * noise
    with torch.no_grad():
        x0_raw = tgt.to_x0_eps(raw(x_t, levels.t.float()), x_t, a, sg)[0].double()
    c_skip, c_out, _, _ = (expand_like(c, x0_raw) for c in edm_precond(levels.nsr, 0.5))
    pre.net = Constant((x0_raw - c_skip * x_t.double() / a.double()) / c_out)

    def logged(model):
        kw = dict(process=p, target=tgt, weighting=w, density=LEVELS, noise=noise)
        with torch.no_grad():
            return diffusion_loss(model, x0, generator=torch.Generator().manual_seed(7), **kw)[0].double()

    x0_units = w.x0_weight(levels.logsnr, p) * (x0_raw - x0.double()).pow(2).mean(1)
    assert torch.allclose(logged(raw), x0_units, rtol=1e-4)
    assert torch.allclose(logged(pre), x0_units, rtol=1e-4)


def test_configs_without_precond_are_raw_networks():
    d = denoiser("vp", "eps", "none", 4)
    old = {k: v for k, v in d.config().items() if k not in ("precond", "target")}
    e = Denoiser.from_config(old)
    e.load_state_dict(d.state_dict())
    x, t = torch.randn(3, 4), torch.rand(3)
    assert e.precond == "none" and e.target is None and torch.equal(e(x, t), d(x, t))
    with pytest.raises(DifflossError, match="needs the target"):
        Denoiser(MLP, (4,), get_process("vp"), precond="edm")
    with pytest.raises(DifflossError, match="unknown preconditioning"):
        Denoiser(MLP, (4,), get_process("vp"), precond="karras", target=get_target("x0"))
