"""``diffloss optimal-loss``: the JSON contract (docs/design.md, CLI contracts), loss factors across processes and
targets, outputs, bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffloss.cli import cli as diffloss_cli


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLOSS_CACHE", str(tmp_path / "cache"))


def invoke(*args):
    return CliRunner().invoke(diffloss_cli, list(args))


@pytest.fixture
def data_file(tmp_path):
    x = np.random.default_rng(0).standard_normal((120, 3)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return path, x


def run_json(tmp_path, *args):
    out = tmp_path / "o.json"
    r = invoke("optimal-loss", *args, "--json", str(out), "--quiet")
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def test_json_contract_and_outputs(tmp_path, data_file):
    path, x = data_file
    csv_out, png = tmp_path / "o.csv", tmp_path / "o.png"
    r = invoke(
        "optimal-loss", "--data", str(path), "--sigmas", "0.1,1,50", "--queries", "400",
        "--json", str(tmp_path / "o.json"), "--csv", str(csv_out), "--plot", str(png),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o.json").read_text())
    assert {"n_data", "dim", "process", "target", "estimator", "levels", "units", "queries", "seed"} <= set(doc)
    assert (doc["n_data"], doc["dim"], doc["estimator"], doc["queries"]) == (120, 3, "exact", 400)
    assert doc["data"]["fingerprint"] and doc["units"] == "per-dimension mean"
    lv = doc["levels"]
    assert [v["sigma"] for v in lv] == [0.1, 1.0, 50.0]
    for v in lv:
        assert {"sigma", "logsnr", "x0_mse", "loss", "stderr"} <= set(v)
        assert v["logsnr"] == pytest.approx(-2 * np.log(v["sigma"]))
    assert lv[-1]["x0_mse"] == pytest.approx(x.var(0).mean(), rel=0.2)  # s -> inf: the data variance
    assert csv_out.read_text().splitlines()[0].startswith("sigma,logsnr")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "J*_x0" in r.output  # the table


@pytest.mark.parametrize(
    "process, target, factor",
    [
        ("vp", "eps", lambda s: 1 / s**2),  # SNR
        ("vp", "v", lambda s: 1 / s**2 + 1),  # SNR + 1
        ("ve", "score", lambda s: 1 / s**4),  # alpha^2 / sigma^4 with alpha = 1
        ("flow", "flow", lambda s: ((1 + s) / s) ** 2),  # 1 / t^2 with t = s / (1 + s)
        ("edm", "x0", lambda s: 1.0),
    ],
)
def test_loss_in_target_units_follows_the_loss_factors(tmp_path, data_file, process, target, factor):
    path, _ = data_file
    doc = run_json(tmp_path, "--data", str(path), "--sigmas", "0.3,2", "--queries", "64", "--process", process,
                   "--target", target)  # fmt: skip
    for v in doc["levels"]:
        assert v["loss"] == pytest.approx(v["x0_mse"] * factor(v["sigma"]), rel=1e-9)
        assert v["loss_stderr"] == pytest.approx(v["stderr"] * factor(v["sigma"]), rel=1e-9)


def test_times_and_levels(tmp_path, data_file):
    path, _ = data_file
    doc = run_json(tmp_path, "--data", str(path), "--t", "0.25,0.5", "--process", "flow", "--queries", "16")
    assert [v["sigma"] for v in doc["levels"]] == pytest.approx([1 / 3, 1.0])
    assert [v["t"] for v in doc["levels"]] == pytest.approx([0.25, 0.5])
    doc = run_json(tmp_path, "--data", str(path), "--levels", "5", "--queries", "16")
    assert [v["sigma"] for v in doc["levels"]] == pytest.approx(np.geomspace(0.002, 80, 5))


def test_conditional_with_labels_file(tmp_path):
    x = np.array([[0.6], [-0.6], [10.0], [10.0]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([0, 0, 1, 1]))
    doc = run_json(tmp_path, "--data", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                   "--sigmas", "0.5", "--queries", "2000")  # fmt: skip
    assert set(doc["per_class"]) == {"0", "1"}
    assert doc["per_class"]["1"]["x0_mse"] == [0.0]  # two identical rows: nothing to confuse
    assert doc["levels"][0]["x0_mse"] == pytest.approx(0.5 * doc["per_class"]["0"]["x0_mse"][0])


def test_cache_hit_returns_the_same_numbers(tmp_path, data_file, monkeypatch):
    path, _ = data_file
    args = ("--data", str(path), "--sigmas", "0.5", "--queries", "32")
    first = run_json(tmp_path, *args)
    assert list((tmp_path / "cache" / "optimal_loss").glob("*.json"))
    monkeypatch.setattr("diffloss.optimal.estimate._compute", lambda *a, **k: pytest.fail("cache not used"))
    assert run_json(tmp_path, *args)["levels"] == first["levels"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sigmas", "0"], "must be > 0"),
        (["--sigmas", "0.1,-2"], "must be > 0"),
        (["--sigmas", "nan"], "not finite"),
        (["--sigmas", "abc"], "not a number"),
        (["--sigmas", "1", "--queries", "0"], "queries must be >= 2"),
        (["--sigmas", "1", "--process", "vq"], "unknown process 'vq'"),
        (["--sigmas", "1", "--target", "x1"], "unknown target 'x1'"),
        (["--sigmas", "1", "--estimator", "magic"], "unknown estimator 'magic'"),
        (["--sigmas", "1", "--labels", "LABELS3"], "3 labels for 120 rows"),
        (["--sigmas", "1", "--conditional"], "has no labels"),
        (["--sigmas", "1", "--estimator", "stochastic", "--subset-size", "121"], "subset size must be in"),
        (["--sigmas", "1", "--estimator", "stochastic", "--correction", "0"], "correction C must be > 0"),
        (["--sigmas", "1", "--estimator", "stochastic", "--correction", "-3"], "correction C must be > 0"),
        (["--sigmas", "1", "--t", "0.5"], "only one of"),
        (["--t", "0", "--process", "vp"], "s = σ/α = 0"),
        (["--logsnr", "1e5"], "--logsnr"),
        (["--t", "2", "--process", "ve"], "outside the time range"),
        (["--sigmas", "1", "--max-memory", "lots"], "not a size"),
        (["--sigmas", "1", "--workers", "0"], "--workers must be >= 1"),
        (["--sigmas", "1", "--threads", "-1"], "--threads >= 0"),
        (["--sigmas", "1", "--device", "tpu"], "not one of auto, cpu, cuda"),
        (["--sigmas", "1", "--precision", "bf16"], "needs fp32 Gram products"),
    ],
)
def test_bad_input_one_line_nonzero_exit_no_output(tmp_path, data_file, args, message):
    path, _ = data_file
    np.save(tmp_path / "l3.npy", np.array([0, 1, 0]))
    args = [str(tmp_path / "l3.npy") if a == "LABELS3" else a for a in args]
    out = tmp_path / "o.json"
    r = invoke("optimal-loss", "--data", str(path), *args, "--json", str(out), "--quiet")
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], r.output
    assert not out.exists()


@pytest.mark.parametrize("content", ["missing", "nan", "object", "empty"])
def test_loader_refusals_are_one_line(tmp_path, content):
    path = tmp_path / "d.npy"
    if content == "nan":
        np.save(path, np.array([[1.0, np.nan]]))
    elif content == "object":
        np.save(path, np.array([[1, "a"]], dtype=object), allow_pickle=True)
    elif content == "empty":
        np.save(path, np.zeros((0, 3)))
    out = tmp_path / "o.json"
    r = invoke("optimal-loss", "--data", str(path), "--sigmas", "1", "--json", str(out))
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert not out.exists()
