"""The `diffloss bridge` commands: the run-directory contract, resume, checkpoints, divergence stop, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from diffloss.bridge import CHECKPOINT, BridgeRun, make_config, train_bridge
from diffloss.bridge.targets import SAMPLING_TARGETS
from diffloss.bridge.targets.synthetic import Gaussian
from diffloss.cli import cli as diffloss_cli
from diffloss.errors import DifflossError

TINY = ["--target", "gaussian", "--batch", "16", "--steps", "4", "--hidden", "8", "--eval-n", "64", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(diffloss_cli, list(args))


def test_help_reads_like_a_manual():
    for sub in (["bridge"], ["bridge", "train"], ["bridge", "eval"]):
        r = invoke(*sub, "--help")
        assert r.exit_code == 0 and "Example:" in r.output


def test_train_writes_the_contract_and_eval_reevaluates(tmp_path):
    out = tmp_path / "run"
    r = invoke("bridge", "train", *TINY, "--sampler", "cmcd", "--loss", "rkl-ld", "--iters", "4", "--eval-every", "2",
               "--seed", "3", "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    for key in ("elbo", "log_z", "ess", "sinkhorn", "mmd", "emc", "iterations", "diverged_at"):
        assert key in m
    assert m["iterations"] == 4 and m["diverged_at"] is None and m["emc"] is None  # gaussian: no modes
    assert m["elbo"] <= m["log_z"] + 1e-9 and 0 < m["ess"] <= 1 and m["sinkhorn"] > 0
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [ln["iteration"] for ln in lines] == [2, 4]
    e = invoke("bridge", "eval", "--ckpt", str(out), "--n", "50", "--json", str(tmp_path / "e.json"))
    assert e.exit_code == 0, e.output
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["iteration"] == 4 and ev["n"] == 50 and ev["elbo"] <= ev["log_z"]


def test_score_gate_trains_saves_and_reloads(tmp_path):
    """--score-gate reaches the config, its gate learns (starts at zero), and eval rebuilds it from the checkpoint."""
    out = tmp_path / "run"
    r = invoke("bridge", "train", *TINY, "--sampler", "dis", "--loss", "rkl-r", "--iters", "3", "--eval-every", "0",
               "--score-gate", "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["sampler"]["score_gate"] is True
    weights = load_file(str(out / CHECKPOINT))
    last = max(int(k.split(".")[3]) for k in weights if k.startswith("model.net.gate."))
    assert float(weights[f"model.net.gate.{last}.bias"].abs().max()) > 0  # trained away from its zero start
    e = invoke("bridge", "eval", "--ckpt", str(out), "--n", "32", "--json", str(tmp_path / "e.json"))
    assert e.exit_code == 0, e.output


def test_resume_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = make_config("gaussian", "dbs", steps=4, hidden=(8,), loss="lv", iters=6, batch=16, eval_every=0, eval_n=64)
    straight = train_bridge(cfg, tmp_path / "a", quiet=True)
    run = BridgeRun(cfg)
    for _ in range(3):
        run.step()
    run.save(tmp_path / "b" / CHECKPOINT)  # as if stopped after 3 iterations
    steps = []
    step = BridgeRun.step
    monkeypatch.setattr(BridgeRun, "step", lambda self: steps.append(1) or step(self))
    resumed = train_bridge(cfg, tmp_path / "b", resume=True, quiet=True)
    assert len(steps) == 3  # continued, not restarted
    assert resumed == straight  # bit-identical: model, log Z, optimizer, schedule and RNG restored
    assert resumed["iterations"] == 6


class _BreaksAtCall(Gaussian):
    """A Gaussian whose log density is NaN on one call: the 4th (the 3rd training step of a DIS run below)."""

    def __init__(self):
        super().__init__(dim=2)
        self.calls = 0

    def log_prob(self, x):
        self.calls += 1
        lp = super().log_prob(x)
        return lp * float("nan") if self.calls == 4 else lp


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SAMPLING_TARGETS, "breaks", _BreaksAtCall)
    cfg = make_config("breaks", "dis", steps=4, hidden=(8,), loss="rkl-r", iters=10, batch=16, eval_every=2, eval_n=64)
    # log_prob calls: step 1, step 2, evaluation at 2, step 3 -> NaN
    m = train_bridge(cfg, tmp_path, quiet=True)
    assert m["diverged_at"] == 3 and m["iterations"] == 2
    assert torch.isfinite(torch.tensor(m["elbo"]))
    assert BridgeRun.load(tmp_path / CHECKPOINT).iteration == 2
    assert "diverged: non-finite loss, R or parameter at iteration 3" in capsys.readouterr().err
    assert json.loads((tmp_path / "metrics.json").read_text())["diverged_at"] == 3


def test_divergence_without_evaluations_keeps_the_periodic_checkpoint(tmp_path, monkeypatch):
    """eval_every = 0 (the bench's setting): checkpoints every 2 steps; log_prob calls: steps 1, 2, 3, step 4 -> NaN."""
    monkeypatch.setitem(SAMPLING_TARGETS, "breaks", _BreaksAtCall)
    cfg = make_config(
        "breaks", "dis", steps=4, hidden=(8,), loss="rkl-r", iters=10, batch=16, eval_every=0, eval_n=64, ckpt_every=2
    )
    m = train_bridge(cfg, tmp_path, quiet=True)
    assert m["diverged_at"] == 4 and m["iterations"] == 2
    assert BridgeRun.load(tmp_path / CHECKPOINT).iteration == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sampler", "pis", "--loss", "lv"], "unknown sampler 'pis'"),
        (["--sampler", "dis", "--loss", "fkl"], "unknown loss 'fkl'"),
        (["--sampler", "dis", "--steps", "0"], "--steps must be >= 1"),
        (["--sampler", "dis", "--batch", "1"], "--batch must be >= 2"),
        (["--sampler", "dis", "--hidden", "64,x"], "--hidden"),
        (["--sampler", "dis", "--init-std", "-1"], "--init-std must be a positive number"),
        (["--sampler", "dis", "--device", "nonsense"], "--device 'nonsense' is not one of auto, cpu, cuda, cuda:N"),
        (["--sampler", "dis", "--device", "meta"], "--device 'meta' is not one of auto, cpu, cuda, cuda:N"),
        pytest.param(
            ["--sampler", "dis", "--device", "cuda"],
            "--device cuda: CUDA is not available on this machine; use --device cpu (or auto)",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_bad_train_input_one_line_no_output(tmp_path, args, message):
    out = tmp_path / "run"
    base = [a for a in TINY if a not in ("--batch", "16", "--steps", "4", "--hidden", "8")]
    r = invoke("bridge", "train", *base, *args, "--iters", "2", "--out", str(out))
    assert r.exit_code == 2 and message in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


def test_unknown_target_and_unreadable_checkpoint(tmp_path):
    r = invoke("bridge", "train", "--target", "nope", "--sampler", "dis", "--out", str(tmp_path / "r"))
    assert r.exit_code == 2 and "unknown sampling target 'nope'" in r.output and len(r.output.splitlines()) == 1
    for content, message in ((None, "does not exist"), (b"not a safetensors file", "truncated or corrupt")):
        d = tmp_path / ("missing" if content is None else "garbage")
        d.mkdir()
        if content is not None:
            (d / CHECKPOINT).write_bytes(content)
        e = invoke("bridge", "eval", "--ckpt", str(d), "--json", str(tmp_path / "e.json"))
        assert e.exit_code == 2 and message in e.output and len(e.output.splitlines()) == 1
        assert not (tmp_path / "e.json").exists()


def test_checkpoint_is_checksummed(tmp_path):
    """Checkpoints go through diffloss.checkpoint: a flipped byte in a tensor is refused, not resumed from."""
    cfg = make_config("gaussian", "dis", steps=2, hidden=(8,), iters=1, batch=4, eval_every=0, eval_n=16)
    train_bridge(cfg, tmp_path, quiet=True)
    path = tmp_path / CHECKPOINT
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte belongs to the last tensor's data
    path.write_bytes(bytes(data))
    e = invoke("bridge", "eval", "--ckpt", str(tmp_path))
    assert e.exit_code == 2 and "checksum mismatch" in e.output and len(e.output.splitlines()) == 1
    with pytest.raises(DifflossError, match="checksum mismatch"):
        train_bridge(cfg, tmp_path, resume=True, quiet=True)


def test_a_checkpoint_of_the_format_before_checksums_says_retrain(tmp_path):
    save_file({"log_z": torch.zeros(())}, str(tmp_path / CHECKPOINT), metadata={"state": "{}"})
    e = invoke("bridge", "eval", "--ckpt", str(tmp_path))
    assert e.exit_code == 2 and "before checksums" in e.output and "retrain" in e.output
    assert len(e.output.splitlines()) == 1


def test_non_finite_evaluation_is_reported_as_null():
    cfg = make_config("gaussian", "dis", steps=2, hidden=(8,), batch=4, eval_n=16)
    run = BridgeRun(cfg)
    with torch.no_grad():
        run.model.log_sigma.fill_(float("inf"))  # kernels with infinite noise: R and the samples are not finite
    m = run.evaluate(16, 0)
    assert m["elbo"] is None and m["log_z"] is None and m["sinkhorn"] is None
