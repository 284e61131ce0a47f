import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffloss.cli import cli as diffloss_cli


def invoke(*args):
    return CliRunner().invoke(diffloss_cli, list(args))


def test_help_reads_like_a_manual():
    r = invoke("--help")
    text = " ".join(r.output.split()).replace("- ", "-")  # undo line wrapping (also at hyphens)
    assert r.exit_code == 0 and "noise-to-signal ratio" in text and "per-dimension" in text
    for sub in ("info", "formulation"):
        h = invoke(sub, "--help")
        assert h.exit_code == 0 and "Example:" in h.output


def test_info_json(tmp_path):
    out = tmp_path / "info.json"
    r = invoke("info", "digits", "--json", str(out))
    assert r.exit_code == 0, r.output
    info = json.loads(out.read_text())
    assert info["n"] == 1797 and info["dim"] == 64 and info["labels"]["n_classes"] == 10
    assert "variance per dim" in r.output


def test_formulation_json_matches_design_factors(tmp_path):
    out = tmp_path / "f.json"
    r = invoke("formulation", "--process", "vp", "--sigmas", "0.1,1,10", "--json", str(out))
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["levels"]
    for row in rows:
        snr = row["nsr"] ** -2
        assert row["factor_eps"] == pytest.approx(snr) and row["factor_v"] == pytest.approx(snr + 1)
        assert row["alpha"] ** 2 + row["sigma"] ** 2 == pytest.approx(1.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "missing.npy"], "does not exist"),
        (["info", "cifar"], "unknown dataset 'cifar'"),
        (["formulation", "--process", "vq"], "Invalid value for '--process'"),
        (["formulation", "--sigmas", "0.1,-1"], "must be > 0"),
        (["formulation", "--sigmas", "0.1,nan"], "not finite"),
        (["formulation", "--sigmas", "abc"], "not a number"),
        (["formulation", "--process", "ve", "--sigmas", "1000"], "outside the range"),
    ],
)
def test_bad_input_one_line_nonzero_exit_no_output(tmp_path, args, message):
    out = tmp_path / "o.json"
    r = invoke(*args, "--json", str(out))
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output
    assert not out.exists()


def test_subprocess_error_is_one_line_with_exit_2(tmp_path, cli):
    np.save(tmp_path / "n.npy", np.array([[1.0, np.nan]]))
    r = cli("info", str(tmp_path / "n.npy"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "NaN" in lines[0], r.stderr
    assert r.stdout == ""


def test_python_dash_m_and_version(cli):
    r = cli("--version")
    assert r.returncode == 0 and "diffloss" in r.stdout


def test_outputs_get_ordinary_file_permissions(tmp_path):
    import os

    from diffloss.io import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
