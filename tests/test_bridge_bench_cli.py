"""`diffloss bridge bench` end to end on the `smoke` preset (2 iterations, batch 4, K=4): a run per cell, resuming,
the report with every cell filled or stated as failed / not run yet, and bad input."""

from __future__ import annotations

import csv
import json
import math

import pytest
from click.testing import CliRunner

from diffloss.bridge.bench import Budget, Preset, finished_rows, make_grid, write_report
from diffloss.bridge.bench import run as bench_run
from diffloss.bridge.bench.run import run_grid
from diffloss.cli import cli as diffloss_cli

GRID = ["--preset", "smoke", "--targets", "seeds", "--samplers", "dis", "--losses", "lv,rkl-ld", "--seeds", "0"]
CELLS = ["seeds/dis/lv/seed0", "seeds/dis/rkl-ld/seed0"]


def bench(*args):
    return CliRunner().invoke(diffloss_cli, ["bridge", "bench", "--quiet", *args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A root with the two cells trained once, and the report of that run."""
    root = tmp_path_factory.mktemp("bench")
    r = bench(*GRID, "--out", str(root / "runs"), "--report", str(root / "report.md"))
    assert r.exit_code == 0, r.output
    return root


def test_every_cell_has_metrics_from_training(finished):
    for key in CELLS:
        metrics = json.loads((finished / "runs" / key / "metrics.json").read_text())
        assert metrics["iterations"] == 2 and metrics["diverged_at"] is None
        # log Z_hat = logsumexp(-R) - log B >= mean(-R) = ELBO on the same samples (Jensen), both finite
        assert math.isfinite(metrics["elbo"]) and metrics["log_z"] >= metrics["elbo"]
        assert 1 / 8 - 1e-9 <= metrics["ess"] <= 1 + 1e-9  # normalized ESS of 8 samples lies in [1/B, 1]
        assert json.loads((finished / "runs" / key / "config.json").read_text())["batch"] == 4


def test_report_fills_every_cell_and_says_how_to_reproduce(finished):
    report = (finished / "report.md").read_text()
    elbo = {(r["sampler"], r["loss"]): float(r["elbo_mean"]) for r in csv.DictReader((finished / "report.csv").open())}
    for key in CELLS:
        _, sampler, loss, _ = key.split("/")
        value = json.loads((finished / "runs" / key / "metrics.json").read_text())["elbo"]
        assert elbo[(sampler, loss)] == pytest.approx(value)
        assert f"| {sampler} | {loss} | {value:.2f} (n=1) |" in report  # one seed: no std
    assert "not run yet" not in report and "Runs finished: 2 of 2 (0 diverged, 0 failed)" in report
    assert "`diffloss bridge bench --preset smoke --targets seeds --samplers dis --losses lv,rkl-ld --seeds 0" in report
    assert (finished / "report_elbo.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_finished_cells_and_trains_missing_ones(finished):
    runs = finished / "runs"
    first = {key: (runs / key / "metrics.json").read_text() for key in CELLS}
    (runs / CELLS[1] / "metrics.json").unlink()
    r = bench(*GRID, "--out", str(runs), "--report", str(finished / "again.md"))
    assert r.exit_code == 0, r.output
    assert (runs / CELLS[0] / "metrics.json").read_text() == first[CELLS[0]]  # not retrained
    assert (runs / CELLS[1] / "metrics.json").is_file()
    timed = [json.loads(line)["cell"] for line in (runs / "timing.jsonl").read_text().splitlines()]
    assert timed == [*CELLS, CELLS[1]]  # one training per cell, plus the retrained one


def test_report_only_marks_cells_not_run_yet(finished):
    grid = [*GRID[:3], "seeds,brownian", *GRID[4:-1], "0,1"]  # a second target and a second seed
    r = bench(*grid, "--out", str(finished / "runs"), "--report", str(finished / "partial.md"), "--report-only")
    assert r.exit_code == 0, r.output
    report = (finished / "partial.md").read_text()
    assert "| sampler | loss | seeds | brownian |" in report
    elbo = report.split("## elbo")[1].split("## ")[0]
    assert elbo.count("(1/2 seeds run) | not run yet |") == 2 and "Runs finished: 2 of 8" in report
    assert not (finished / "runs" / "brownian").exists()


def test_a_failing_cell_is_reported_and_retried(tmp_path, monkeypatch):
    real_train = bench_run.train_bridge

    def failing_train(cfg, out, **kw):
        if cfg.loss == "lv":
            raise RuntimeError("linalg.cholesky: the input is not positive-definite")
        return real_train(cfg, out, **kw)

    monkeypatch.setattr(bench_run, "train_bridge", failing_train)
    r = bench(*GRID, "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "r.md"))
    assert r.exit_code == 1 and "1 of 2 cells failed" in r.output
    failed = json.loads((tmp_path / "runs" / CELLS[0] / "failed.json").read_text())
    assert failed["error"].startswith("RuntimeError: linalg.cholesky")
    assert (
        "| dis | lv | 1/1 failed: RuntimeError: linalg.cholesky: the input is not positive-definite |"
        in (tmp_path / "r.md").read_text()
    )
    monkeypatch.setattr(bench_run, "train_bridge", real_train)
    r = bench(*GRID, "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "r.md"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / CELLS[0] / "metrics.json").is_file()
    assert not (tmp_path / "runs" / CELLS[0] / "failed.json").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (("--targets", "sonnar"), "unknown sampling target 'sonnar'"),
        (("--samplers", "pis"), "unknown sampler 'pis'"),
        (("--losses", "tb"), "unknown bridge loss 'tb'"),
        (("--preset", "huge"), "unknown benchmark preset 'huge'"),
        (("--seeds", "0,x"), "not a list of integers"),
        (("--seeds", "1,1"), "distinct non-negative"),
        (("--targets", ","), "comma-separated list"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, change, message):
    args = list(GRID)
    i = args.index(change[0])
    args[i + 1] = change[1]
    r = bench(*args, "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "r.md"))
    assert r.exit_code == 2 and message in r.output
    assert r.output.strip().count("\n") == 0 and r.output.startswith("Error: ")
    assert list(tmp_path.iterdir()) == []


def test_bad_report_path_and_mixed_presets_are_refused(finished, tmp_path):
    r = bench(*GRID, "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "r.txt"))
    assert r.exit_code == 2 and "must end in .md" in r.output and list(tmp_path.iterdir()) == []
    small = ["--preset", "small", *GRID[2:]]
    r = bench(*small, "--out", str(finished / "runs"), "--report", str(tmp_path / "r.md"))
    assert r.exit_code == 2 and "holds runs of preset 'smoke' with other budgets" in r.output
    r = bench(*GRID, "--out", str(tmp_path / "none"), "--report", str(tmp_path / "r.md"), "--report-only")
    assert r.exit_code == 2 and "holds no benchmark runs" in r.output and list(tmp_path.iterdir()) == []


def test_help_is_a_manual():
    r = CliRunner().invoke(diffloss_cli, ["bridge", "bench", "--help"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "Example:" in text and "GPU" in text and "not run yet" in text


def test_a_diverging_run_is_reported_with_its_iteration(tmp_path):
    """A learning rate of 1000 throws the parameters (log sigma among them) thousands of units in one step, so the
    next simulation is non-finite: training stops there and the cell states the iteration."""
    blowup = Preset("blowup", "lr 1000", Budget(iterations=20, batch=4, steps=4, learning_rate=1e3, eval_samples=8))
    cells = make_grid(["seeds"], ["dis"], ["lv"], [0])
    assert run_grid(cells, blowup, tmp_path, quiet=True) == []
    (row,) = finished_rows(cells, tmp_path)
    assert row["diverged_at"] is not None and 1 <= row["diverged_at"] <= 3 and row["iterations"] < 20
    (md, *_) = write_report([row], blowup, tmp_path / "r.md", expected=cells)
    assert f"| dis | lv | diverged at {row['diverged_at']} |" in md.read_text()
    assert "(1 diverged, 0 failed)" in md.read_text()
