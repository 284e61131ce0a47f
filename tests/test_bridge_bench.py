"""Benchmark scaffolding: grid, presets, resumability, and the report's numbers on fake per-run metric dicts."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from math import nan

import pytest

from diffloss.bridge.bench import (
    PRESETS,
    Cell,
    finished_rows,
    get_preset,
    make_grid,
    pending,
    run_dir,
    summarize,
    to_csv,
    to_markdown,
    write_report,
)
from diffloss.bridge.bench.report import loss_ordering, plot_metric, stat_text
from diffloss.errors import DifflossError
from diffloss.runs import NOTES_BEGIN, NOTES_END, Stat


def fake_rows() -> list[dict]:
    """Seeds and Sonar with CMCD; one LV run of Sonar diverged; rKL-R on Seeds has one seed only."""
    rows = []
    elbos = {
        ("seeds", "rkl-ld"): [-73.9, -74.1, -74.3],
        ("seeds", "lv"): [-74.6, -74.0, -74.4],
        ("seeds", "rkl-r"): [-75.0],
        ("sonar", "rkl-ld"): [-110.0, -111.0, -112.0],
        ("sonar", "lv"): [-109.0, -109.5, None],
    }
    for (target, loss), values in elbos.items():
        for seed, elbo in enumerate(values):
            diverged = elbo is None
            rows.append(
                {
                    "target": target,
                    "sampler": "cmcd",
                    "loss": loss,
                    "seed": seed,
                    "elbo": elbo,
                    "log_z": None if diverged else elbo + 0.5,
                    "ess": None if diverged else 0.1 * (seed + 1),
                    "sinkhorn": None,
                    "mmd": None,
                    "emc": None,
                    "iterations": 120 if diverged else 500,
                    "diverged_at": 120 if diverged else None,
                }
            )
    return rows


def by_cell(summaries):
    return {(c.target, c.sampler, c.loss): c for c in summaries}


def test_summary_means_and_sample_stds():
    cells = by_cell(summarize(fake_rows()))
    ld = cells[("seeds", "cmcd", "rkl-ld")].stats["elbo"]
    assert ld.n == 3
    assert ld.mean == pytest.approx(statistics.mean([-73.9, -74.1, -74.3]), abs=1e-12)
    assert ld.std == pytest.approx(statistics.stdev([-73.9, -74.1, -74.3]), abs=1e-12)
    assert math.isnan(cells[("seeds", "cmcd", "rkl-r")].stats["elbo"].std)  # one seed: no std (diffloss.runs.stats)
    assert "sinkhorn" not in cells[("seeds", "cmcd", "rkl-ld")].stats  # undefined metric → no stat


def test_diverged_runs_are_counted_not_averaged():
    lv = by_cell(summarize(fake_rows()))[("sonar", "cmcd", "lv")]
    assert lv.n_runs == 3 and lv.diverged_at == (120,)
    assert lv.stats["elbo"].n == 2 and lv.stats["elbo"].mean == pytest.approx(-109.25)
    assert lv.text("elbo") == "-109.25 ± 0.35 (1/3 diverged at 120)"


def test_all_diverged_cell_states_the_failure():
    rows = [r for r in fake_rows() if r["loss"] == "lv" and r["target"] == "sonar"]
    for r in rows:
        r["diverged_at"] = 7
    (cell,) = summarize(rows)
    assert cell.stats == {} and cell.text("elbo") == "diverged at 7, 7, 7"


def test_rows_without_keys_are_rejected():
    with pytest.raises(DifflossError, match="lacks loss"):
        summarize([{"target": "seeds", "sampler": "cmcd", "elbo": 1.0}])


def test_csv_round_trip():
    summaries = summarize(fake_rows())
    table = list(csv.DictReader(io.StringIO(to_csv(summaries))))
    assert len(table) == 5
    row = next(r for r in table if r["target"] == "sonar" and r["loss"] == "rkl-ld")
    assert float(row["elbo_mean"]) == pytest.approx(-111.0) and float(row["elbo_std"]) == pytest.approx(1.0)
    assert row["n_runs"] == "3" and row["n_diverged"] == "0" and row["sinkhorn_mean"] == "" and row["mmd_n"] == "0"


def test_loss_ordering_and_verdict():
    summaries = summarize(fake_rows())
    assert loss_ordering(summaries, "seeds", "cmcd") == ["rkl-ld", "lv", "rkl-r"]
    assert loss_ordering(summaries, "sonar", "cmcd") == ["lv", "rkl-ld"]
    report = to_markdown(summaries, PRESETS["small"])
    assert "- seeds, cmcd: rkl-ld > lv > rkl-r — agrees with the paper (rKL-LD best) (the top two" in report
    assert "- sonar, cmcd: lv > rkl-ld — disagrees with the paper (rKL-LD best)\n" in report
    sonar = [r for r in fake_rows() if (r["target"], r["loss"]) == ("sonar", "rkl-ld")]
    all_diverged = [{**r, "loss": "rkl-r", "elbo": None, "diverged_at": 7} for r in sonar]
    report = to_markdown(summarize([*fake_rows(), *all_diverged]), PRESETS["small"])  # a loss without any ELBO
    assert "- sonar, cmcd: lv > rkl-ld — disagrees" in report and "| -75.00 (n=1) | diverged at 7, 7, 7 |" in report


def test_stat_text_switches_to_exponent_form_for_runs_gone_wrong():
    assert stat_text(Stat(-74.1234, 0.2, 3)) == "-74.12 ± 0.20" and stat_text(Stat(-511.2, nan, 1)) == "-511.20 (n=1)"
    assert stat_text(Stat(-6.08e13, 8.6e13, 2)) == "-6.08e+13 ± 8.6e+13"
    assert stat_text(Stat(-5.16e5, nan, 1)) == "-5.16e+05 (n=1)"


def test_markdown_has_cells_budget_and_published_values():
    report = to_markdown(summarize(fake_rows()), PRESETS["small"])
    assert "| sampler | loss | seeds | sonar |" in report
    assert "| cmcd | rkl-ld | -74.10 ± 0.20 | -111.00 ± 1.00 |" in report
    assert "| cmcd | rkl-r | -75.00 (n=1) | — |" in report
    assert "| reference ELBO (source in brackets) | | -73.45 (best known) | -108.83 (one CMCD rKL-LD run) |" in report
    assert report.count("| log Z (our estimate) | | -73.40 | -108.40 |") == 2  # under the ELBO and log Z tables
    assert "2000 iterations, batch 64, K=32" in report and "lgcp: iterations=1000, batch=16" in report
    assert "## sinkhorn" not in report  # no run reported it
    lgcp = {**fake_rows()[0], "target": "lgcp", "elbo": 450.0}
    assert "| 497.85 (best known) |" in to_markdown(summarize([*fake_rows(), lgcp]), PRESETS["small"])


def test_write_report_writes_markdown_csv_and_plot(tmp_path):
    md, table, plot = write_report(fake_rows(), PRESETS["paper"], tmp_path / "reports" / "bridge_benchmark.md")
    assert md.read_text().startswith("# Bridge-sampler benchmark")
    assert table.read_text().count("\n") == 6
    assert plot.name == "bridge_benchmark_elbo.png" and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_elbo = [{**r, "elbo": None} for r in fake_rows()]
    assert len(write_report(no_elbo, PRESETS["paper"], tmp_path / "no_elbo" / "b.md")) == 2
    with pytest.raises(DifflossError, match="nothing to plot"):
        plot_metric(summarize(no_elbo), "elbo", tmp_path / "x.png")
    with pytest.raises(DifflossError, match="no finished runs"):
        write_report([], PRESETS["paper"], tmp_path / "empty" / "bridge_benchmark.md")
    assert not (tmp_path / "empty" / "bridge_benchmark.md").exists()


def test_regenerating_the_report_keeps_the_hand_written_notes(tmp_path):
    path = tmp_path / "bridge_benchmark.md"
    write_report(fake_rows()[:3], PRESETS["small"], path)
    assert path.read_text().rstrip().endswith(f"{NOTES_BEGIN}\n{NOTES_END}")  # an empty block to fill in
    reading = f"{NOTES_BEGIN}\n## Reading\n\nrKL-R leads at this budget.\n{NOTES_END}"
    path.write_text(path.read_text().replace(f"{NOTES_BEGIN}\n{NOTES_END}", reading))
    write_report(fake_rows(), PRESETS["small"], path)  # more runs: new tables, same reading
    text = path.read_text()
    assert text.count(reading) == 1 and text.count(NOTES_BEGIN) == 1
    assert text == to_markdown(summarize(fake_rows()), PRESETS["small"], notes=reading)


def test_grid_size_order_and_validation():
    cells = make_grid()
    assert len(cells) == 5 * 3 * 3 * 3 and len(set(cells)) == len(cells)
    assert cells[0] == Cell("seeds", "dis", "rkl-r", 0) and cells[-1] == Cell("lgcp", "cmcd", "rkl-ld", 2)
    for kwargs, message in [
        ({"targets": ["sonnar"]}, "unknown sampling target"),
        ({"samplers": ["pis"]}, "unknown sampler"),
        ({"losses": ["tb"]}, "unknown bridge loss"),
        ({"seeds": []}, "at least one seed"),
    ]:
        with pytest.raises(DifflossError, match=message):
            make_grid(**kwargs)


def test_pending_and_finished_rows_resume(tmp_path):
    cells = make_grid(targets=["seeds"], samplers=["cmcd"], losses=["lv", "rkl-ld"], seeds=[0, 1])
    done = cells[1]
    run_dir(tmp_path, done).mkdir(parents=True)
    (run_dir(tmp_path, done) / "metrics.json").write_text(json.dumps({"elbo": -74.0, "diverged_at": None}))
    run_dir(tmp_path, cells[2]).mkdir(parents=True)  # started, not finished
    assert pending(cells, tmp_path) == [c for c in cells if c != done]
    assert finished_rows(cells, tmp_path) == [
        {"elbo": -74.0, "diverged_at": None, "target": "seeds", "sampler": "cmcd", "loss": "lv", "seed": 1}
    ]
    (run_dir(tmp_path, done) / "metrics.json").write_text("{not json")
    with pytest.raises(DifflossError, match="not valid JSON"):
        finished_rows(cells, tmp_path)


def test_presets_match_the_issue():
    paper = get_preset("paper")
    b = paper.budget
    assert (b.iterations, b.batch, b.steps, b.optimizer, b.grad_clip, b.lr_schedule) == (
        40_000,
        2000,
        128,
        "radam",
        1.0,
        "cosine",
    )
    assert paper.budget_for("lgcp").batch == 300 and paper.budget_for("seeds").batch == 2000
    small = get_preset("small")
    assert len(small.seeds) >= 3 and small.budget_for("lgcp").iterations < small.budget.iterations
    assert json.loads(json.dumps(small.to_dict()))["overrides"]["lgcp"]["batch"] == 16
    with pytest.raises(DifflossError, match="unknown benchmark preset"):
        get_preset("huge")
