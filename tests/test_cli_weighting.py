"""``diffloss weighting``: the contract in docs/design.md ("CLI contracts"), plots, one-line errors without output."""

import json

import pytest
from click.testing import CliRunner

from diffloss.cli import cli as diffloss_cli


def invoke(*args):
    return CliRunner().invoke(diffloss_cli, list(args))


def test_json_contract_with_negative_logsnr(tmp_path):
    out = tmp_path / "w.json"
    r = invoke("weighting", "--scheme", "min-snr", "--process", "vp", "--target", "v", "--logsnr=-5,0,5", "--json", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert {"scheme", "process", "target", "logsnr", "weights"} <= set(doc)
    assert (doc["scheme"], doc["process"], doc["target"], doc["logsnr"]) == ("min-snr", "vp", "v", [-5.0, 0.0, 5.0])
    snr = [2.718281828459045**lam for lam in doc["logsnr"]]
    assert doc["weights"] == pytest.approx([min(x, 5) / (x + 1) for x in snr], rel=1e-12)  # unnormalized


def test_space_separated_negative_values_and_scheme_parameters(tmp_path):
    out = tmp_path / "w.json"
    r = invoke("weighting", "--scheme", "p2", "--k", "2", "--gamma", "0.5", "--logsnr", "-3,1", "--json", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["target"] == "eps" and doc["params"] == {"name": "p2", "k": 2.0, "gamma": 0.5}
    assert doc["weights"] == pytest.approx([(2 + 2.718281828459045**lam) ** -0.5 for lam in (-3, 1)], rel=1e-12)


def test_debiased_on_flow_velocity_with_implied_weight(tmp_path):
    out = tmp_path / "w.json"
    r = invoke(
        "weighting", "--scheme", "debiased", "--process", "flow", "--target", "flow", "--logsnr=0", "--density",
        "uniform-t", "--json", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["weights"] == pytest.approx([0.25])  # t (1 - t) at t = 1/2
    assert doc["density"]["name"] == "uniform-t" and len(doc["implied_elbo_weight"]) == 1


def test_plot_several_schemes_with_density(tmp_path):
    png = tmp_path / "w.png"
    r = invoke(
        "weighting", "--scheme", "edm,min-snr:gamma=1,p2:k=1,gamma=0.5", "--scheme", "debiased", "--process", "edm",
        "--density", "default", "--plot", png,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_is_a_manual():
    r = invoke("weighting", "--help")
    assert r.exit_code == 0 and "Example:" in r.output and "min(SNR,5)/(SNR+1)" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheme", "min-snr-7", "--logsnr=0"], "unknown weighting 'min-snr-7'"),
        (["--scheme", "min-snr", "--process", "vq", "--logsnr=0"], "unknown process 'vq'"),
        (["--scheme", "min-snr", "--target", "noise2", "--logsnr=0"], "unknown target 'noise2'"),
        (["--scheme", "min-snr", "--logsnr=0", "--density", "beta"], "unknown level density 'beta'"),
        (["--scheme", "min-snr", "--logsnr=0,x"], "not a number"),
        (["--scheme", "min-snr", "--gamma", "-1", "--logsnr=0"], "gamma > 0"),
        (["--scheme", "debiased", "--gamma", "2", "--logsnr=0"], "--gamma does not apply"),
        (["--scheme", "edm", "--process", "edm", "--logsnr=20"], "undefined at log-SNR 20"),
        (["--scheme", "min-snr,debiased", "--logsnr=0"], "exactly one scheme"),
        (["--scheme", "min-snr"], "--json needs --logsnr"),
        (["--scheme", "min-snr", "--logsnr=0", "--process", "flow", "--density", "uniform-t:discrete=true"], "T dis"),
    ],
)
def test_bad_input_one_line_nonzero_exit_no_output(tmp_path, args, message):
    out, png = tmp_path / "o.json", tmp_path / "o.png"
    r = invoke("weighting", *args, "--json", out, "--plot", png)
    assert r.exit_code != 0
    assert message in r.output
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("Error:")
    assert not out.exists() and not png.exists()


def test_subprocess_error_is_one_line_with_exit_2(tmp_path, cli):
    out = tmp_path / "o.json"
    r = cli("weighting", "--scheme", "edm", "--process", "ve", "--logsnr=-20", "--json", str(out))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "only reaches" in lines[0], r.stderr
    assert r.stdout == "" and not out.exists()
