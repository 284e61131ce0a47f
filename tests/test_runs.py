"""The experiment harness diffloss.runs: the run lock, the resumable grid, timing, mean ± std over seeds and the
seed-spread rule, kept notes, and atomic report files."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys

import pytest

from diffloss.errors import DifflossError
from diffloss.runs import (
    FAILED_FILE,
    NOTES_BEGIN,
    NOTES_END,
    CellLocked,
    Grid,
    Stat,
    cell_key,
    cell_lock,
    collect,
    compare,
    csv_text,
    experiment_parser,
    json_ready,
    keep_notes,
    mean_std,
    parse_experiment_args,
    parse_seeds,
    read_timing,
    save_figure,
    timed,
    write_report,
)
from diffloss.runs.lock import LOCK_FILE, acquire, release


def dead_pid() -> int:
    """The pid of a process that has exited."""
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(out.stdout)


def _hold(directory, held, done) -> None:
    """Child process: take the lock, say so, and keep it until told (or killed)."""
    with cell_lock(directory):
        held.set()
        done.wait(30)


def _contend(directory, start, rounds, overlaps) -> None:
    """Child process: take and release the lock ``rounds`` times, counting any moment another holder was inside."""
    start.wait(30)
    for _ in range(rounds):
        try:
            with cell_lock(directory):
                try:
                    fd = os.open(directory / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    with overlaps.get_lock():
                        overlaps.value += 1
                    continue
                os.close(fd)
                os.unlink(directory / "inside")
        except CellLocked:
            pass


def test_lock_is_exclusive_within_a_process_and_released_on_the_way_out(tmp_path):
    run = tmp_path / "run"
    with cell_lock(run) as lock:
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(CellLocked, match=f"being run by process {os.getpid()}"):
            acquire(run)  # held by this process, through another acquire
    assert not (run / LOCK_FILE).exists()  # released on the way out
    for left in ("", str(dead_pid()), "not a pid"):  # a file nobody holds, whatever it says, is taken over
        (run / LOCK_FILE).write_text(left)
        with cell_lock(run) as lock:
            assert lock.read_text() == str(os.getpid())


def test_a_lock_held_by_another_process_is_a_one_line_difflosserror_and_left_alone(tmp_path):
    ctx = multiprocessing.get_context("fork")
    held, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(tmp_path, held, done))
    child.start()
    try:
        assert held.wait(30)
        with pytest.raises(DifflossError) as e:
            acquire(tmp_path)
        assert isinstance(e.value, CellLocked)
        assert "\n" not in str(e.value) and f"process {child.pid}" in str(e.value)
        assert (tmp_path / LOCK_FILE).read_text() == str(child.pid)  # left alone
    finally:
        done.set()
        child.join(30)
    with cell_lock(tmp_path):  # released by its owner
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    ctx = multiprocessing.get_context("fork")
    held, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(tmp_path, held, done))
    child.start()
    assert held.wait(30)
    child.kill()
    child.join(30)
    assert (tmp_path / LOCK_FILE).read_text() == str(child.pid)  # left behind by the killed owner
    with cell_lock(tmp_path) as lock:
        assert lock.read_text() == str(os.getpid())


def test_processes_racing_for_one_lock_never_hold_it_together(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, overlaps = ctx.Event(), ctx.Value("i", 0)
    children = [ctx.Process(target=_contend, args=(tmp_path, start, 300, overlaps)) for _ in range(4)]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    assert overlaps.value == 0


def test_cell_key_is_the_layout_filled_with_the_settings_and_a_relative_directory():
    assert cell_key({"target": "seeds", "loss": "lv", "seed": 0}, "{target}/{loss}/seed{seed}") == "seeds/lv/seed0"
    for bad in ({"name": "../x"}, {"name": "/abs"}, {"name": ""}):
        with pytest.raises(DifflossError, match="not a relative directory"):
            cell_key(bad, "{name}")


def test_grid_skips_finished_cells_resumes_unfinished_ones_and_times_each_run(tmp_path):
    def finished(cell, d):
        return (d / "done.json").exists()

    grid = Grid(tmp_path, key=lambda c: f"c{c}", finished=finished)
    calls = []

    def work(cell, d):  # two stages: a cell interrupted after the first resumes at the second
        calls.append(cell)
        if (d / "stage1").exists():
            (d / "done.json").write_text(json.dumps({"cell": cell}))
        else:
            (d / "stage1").write_text("")
            if cell == 2:
                raise KeyboardInterrupt  # killed mid-cell

    with pytest.raises(KeyboardInterrupt):
        grid.run([1, 2, 3], work)
    assert calls == [1, 2] and not (tmp_path / "c2" / LOCK_FILE).exists()
    assert grid.pending([1, 2, 3]) == [1, 2, 3]  # only stage 1 of cells 1 and 2 is done
    grid.run([1, 2, 3], work)
    grid.run([1, 2, 3], work)
    assert calls == [1, 2, 1, 2, 3, 3]  # the third run found every cell finished
    assert grid.pending([1, 2, 3]) == []
    timing = read_timing(tmp_path / "timing.jsonl")
    assert sorted(timing) == ["c1", "c2", "c3"] and all(t["wall"] >= 0 and t["cpu"] >= 0 for t in timing.values())
    lines = (tmp_path / "timing.jsonl").read_text().splitlines()
    assert len(lines) == 5  # the interrupted run of c2 left no line
    rows = collect((grid.directory(c) / "done.json", {"seed": c}) for c in (1, 2, 3, 4))
    assert rows == [{"cell": 1, "seed": 1}, {"cell": 2, "seed": 2}, {"cell": 3, "seed": 3}]


def test_grid_skips_a_cell_held_by_another_process_and_records_failures_when_asked(tmp_path):
    grid = Grid(tmp_path, key=str, finished=lambda c, d: (d / "ok").exists())
    held = acquire(tmp_path / "held")  # held (here, by this process: a second acquire is refused all the same)

    def work(cell, d):
        if cell == "bad":
            raise RuntimeError("went wrong\nsecond line")
        if cell == "input":
            raise DifflossError("bad input")
        (d / "ok").write_text("")

    assert grid.run_cell("held", work) == "held" and not (tmp_path / "held" / "ok").exists()
    release(held)
    assert grid.run(["bad", "good"], work, keep_going=True) == ["bad"]
    assert json.loads((tmp_path / "bad" / FAILED_FILE).read_text()) == {"error": "RuntimeError: went wrong"}
    with pytest.raises(RuntimeError):
        grid.run(["bad"], work)
    with pytest.raises(DifflossError, match="bad input"):
        grid.run(["input"], work, keep_going=True)  # bad input is never a failed cell
    assert grid.run_cell("bad", lambda c, d: (d / "ok").write_text("")) == "done"
    assert not (tmp_path / "bad" / FAILED_FILE).exists()  # a later success removes the failure
    assert grid.run_cell("good", lambda c, d: pytest.fail("finished meanwhile: not run again")) == "done"


def test_timed_appends_a_line_per_finished_block_and_read_timing_sums_them(tmp_path):
    log = tmp_path / "sub" / "timing.jsonl"
    with timed(log, "train"):
        sum(range(10_000))
    with timed(log, "train"):
        pass
    with pytest.raises(ValueError), timed(log, "eval"):
        raise ValueError
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["cell"] for line in lines] == ["train", "train"] and set(lines[0]) == {"cell", "wall_s", "cpu_s"}
    assert read_timing(log)["train"]["wall"] == pytest.approx(sum(line["wall_s"] for line in lines))
    assert read_timing(tmp_path / "missing.jsonl") == {}


def test_mean_std_is_the_sample_std_and_a_single_seed_has_none():
    values = [3.0, 7.5, 4.25, 9.0]
    st = mean_std(values)
    assert st.mean == pytest.approx(statistics.mean(values), rel=1e-12)
    assert st.std == pytest.approx(statistics.stdev(values), rel=1e-12) and st.n == 4
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    assert mean_std([2.0, math.nan, None, 4.0])[:2] == (3.0, pytest.approx(math.sqrt(2)))  # left out, not counted
    one = mean_std([5.0])
    assert (one.mean, one.n) == (5.0, 1) and math.isnan(one.std)
    assert one.text() == "5 (n=1)" and one.text(".2f", show_n=False) == "5.00 (n=1)"  # never "± 0"
    assert one.to_json() == {"mean": 5.0, "std": None, "n": 1}
    none = mean_std([math.inf])
    assert none.n == 0 and none.text() == "—"
    assert Stat(2.0, 0.25, 3).text() == "2 ± 0.25 (n=3)" and Stat(2.0, 0.25, 3).text(show_n=False) == "2 ± 0.25"
    assert Stat(0.1, 0.02, 2).text("+.1f", ".1f", unit="%", show_n=False) == "+0.1 ± 0.0%"


def test_compare_counts_a_difference_only_beyond_the_larger_seed_std():
    assert compare((10.0, 1.0, 3), (8.0, 1.5, 3), "new") == (pytest.approx(-20.0), "new better")
    assert compare((10.0, 1.0, 3), (12.5, 2.0, 3), "new") == (pytest.approx(25.0), "new worse")
    assert compare((10.0, 1.0, 3), (9.0, 1.5, 3), "new")[1] == "no difference beyond the seed spread"
    assert compare(mean_std([10.0]), mean_std([5.0, 5.1, 5.2]), "new")[1].startswith("undecided")


def test_keep_notes_round_trip_through_a_regenerated_report(tmp_path):
    report = tmp_path / "r.md"
    assert keep_notes(report) == f"{NOTES_BEGIN}\n{NOTES_END}"  # a new report: an empty block to fill in
    write_report(report, f"# tables v1\n\n{keep_notes(report)}\n")
    block = f"{NOTES_BEGIN}\nsome *notes*\nover lines\n{NOTES_END}"
    report.write_text(report.read_text().replace(f"{NOTES_BEGIN}\n{NOTES_END}", block))
    write_report(report, f"# tables v2\n\n{keep_notes(report)}\n\nfooter\n")
    assert report.read_text() == f"# tables v2\n\n{block}\n\nfooter\n"


def test_report_files_are_written_whole_or_not_at_all(tmp_path):
    report = tmp_path / "r.md"
    paths = write_report(
        report, "# r\n", table=csv_text(["a", "b"], [[1, None], {"a": 2}]), data={"x": (1.0, math.nan)}
    )
    assert paths == [report, report.with_suffix(".csv"), report.with_suffix(".json")]
    assert report.with_suffix(".csv").read_text() == "a,b\n1,\n2,\n"
    assert json.loads(report.with_suffix(".json").read_text()) == {"x": [1.0, None]}
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TypeError):  # the JSON writer fails: the old JSON and markdown stay, no temporary file
        write_report(report, "# new\n", table="new\n", data={"bad": object()})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {**before, "r.csv": b"new\n"}
    assert json_ready({1: (2.0, math.inf)}) == {"1": [2.0, None]}


def test_save_figure_writes_the_image_atomically_and_closes_the_figure(tmp_path):
    from diffloss.runs import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "f.png", dpi=50)
    assert path.read_bytes()[:4] == b"\x89PNG" and not plt.fignum_exists(fig.number)

    from matplotlib.figure import Figure

    class Broken(Figure):
        def savefig(self, tmp, **kw):
            with open(tmp, "w") as f:
                f.write("half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        save_figure(Broken(), tmp_path / "g.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]


def test_parse_seeds_accepts_distinct_non_negative_integers():
    assert parse_seeds("2, 0,1") == [2, 0, 1]
    for bad in ("", "1,1", "-1", "x"):
        with pytest.raises(DifflossError, match="--seeds"):
            parse_seeds(bad)
    assert parse_seeds("0, 2", allowed=(0, 1, 2)) == [0, 2]  # some of a preset's seeds
    for bad in ("3", "0,3"):
        with pytest.raises(DifflossError, match=r"--seeds: give some of the preset's seeds \[0, 1, 2\]"):
            parse_seeds(bad, allowed=(0, 1, 2))


def test_experiment_device_option_resolves_to_a_torch_device_and_refuses_what_the_machine_lacks(tmp_path):
    import torch

    ap = experiment_parser("doc", "x", ["p", "gpu"], tmp_path, preset_default="p")
    assert parse_experiment_args(ap, ["--root", str(tmp_path), "--device", "cpu"]).device == torch.device("cpu")
    assert parse_experiment_args(ap, ["--root", str(tmp_path)]).device == torch.device("cpu")  # a CPU preset stays
    auto = parse_experiment_args(ap, ["--root", str(tmp_path), "--preset", "gpu"]).device
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DifflossError, match="CUDA"):
            parse_experiment_args(ap, ["--root", str(tmp_path), "--device", "cuda"])


def test_train_to_on_an_explicit_cpu_device_gives_the_default_runs_weights(tmp_path, monkeypatch):
    import torch

    import diffloss.train
    from conftest import small_train_config
    from diffloss.checkpoint import load_checkpoint
    from diffloss.runs import train_to
    from diffloss.train import CHECKPOINT_FILE

    cfg = small_train_config()
    train_to(cfg, tmp_path / "a")
    train_to(cfg, tmp_path / "b", torch.device("cpu"))
    a, b = (load_checkpoint(tmp_path / k / CHECKPOINT_FILE)[0] for k in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["execution"]["device"] == "cpu"
    seen = []  # the device reaches train(): a stand-in device is handed over, not replaced by the default
    monkeypatch.setattr(diffloss.train, "train", lambda *a, execution=None, **k: seen.append(execution))
    train_to(cfg, tmp_path / "c", torch.device("meta"))
    assert [e.device for e in seen] == [torch.device("meta")]


def test_per_call_averages_wall_and_cpu_seconds_over_the_calls():
    import time

    from diffloss.runs import per_call

    calls = []
    wall, cpu = per_call(lambda: calls.append(time.sleep(0.02)), 5)
    assert len(calls) == 5 and 0.02 <= wall < 0.2  # a sleep is wall time, not CPU time
    assert 0 <= cpu < 0.01


def test_report_status_warns_of_smoke_presets_and_partial_grids():
    from diffloss.runs import report_status
    from diffloss.runs.report import SMOKE

    assert report_status("mnist14") == "" and report_status("mnist14", None) == ""
    assert report_status("smoke14") == SMOKE
    assert report_status("digits", "2 of 6 runs finished") == "**PARTIAL: 2 of 6 runs finished.**"
    assert report_status("smoke", "1 of 2 runs finished") == SMOKE + "\n\n**PARTIAL: 1 of 2 runs finished.**"
