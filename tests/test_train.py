"""Training loop: determinism, bit-exact resume (also after a real SIGKILL), checkpoints, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from diffloss.checkpoint import load_checkpoint
from diffloss.cli import cli
from diffloss.process import get_process
from diffloss.train import CHECKPOINT_FILE, TrainConfig, config_diff, logsnr_bucket, lr_at, train, window_record

MLP_ARGS = ["--data", "moons", "--backbone", "mlp", "--width", "32", "--depth", "1", "--batch", "16", "--quiet"]
UNET_ARGS = ["--data", "digits", "--backbone", "unet", "--channels", "8", "--batch", "8", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(cli, ["train", *args], catch_exceptions=False)


def ckpt_tensors(out) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / CHECKPOINT_FILE)[0]


def assert_all_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def small_config(**kw) -> TrainConfig:
    base = dict(
        data="moons",
        process=get_process("flow").to_dict(),
        target="flow",
        weighting={"name": "constant", "on": "flow"},
        density={"name": "logit-normal"},
        backbone={"name": "mlp", "width": 32, "depth": 1},
        steps=6,
        batch=16,
        ckpt_every=3,
        log_every=2,
    )
    return TrainConfig(**{**base, **kw})


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    runs = [train(small_config(seed=s), tmp_path / f"r{i}") for i, s in enumerate((1, 1, 2))]
    lines = [(tmp_path / f"r{i}" / "metrics.jsonl").read_text().splitlines() for i in range(3)]
    losses = [[json.loads(line)["loss"] for line in ls] for ls in lines]
    assert len(losses[0]) == 3 and losses[0] == losses[1] and losses[0] != losses[2]
    a, b, c = (ckpt_tensors(tmp_path / f"r{i}") for i in range(3))
    assert_all_equal(a, b)
    assert not torch.equal(a["model/net.inp.weight"], c["model/net.inp.weight"])
    assert runs[0].step == 6


@pytest.mark.parametrize("args", [MLP_ARGS, UNET_ARGS, [*MLP_ARGS, "--precond", "edm"]], ids=["mlp", "unet", "edm"])
def test_resume_reproduces_uninterrupted_run_bit_for_bit(tmp_path, args):
    common = [*args, "--process", "vp-cosine", "--target", "v", "--weighting", "min-snr:gamma=5"]
    common += ["--ckpt-every", "3", "--log-every", "1", "--warmup", "4"]
    assert invoke(*common, "--steps", "8", "--out", str(tmp_path / "straight")).exit_code == 0
    assert invoke(*common, "--steps", "5", "--out", str(tmp_path / "split")).exit_code == 0
    half = ckpt_tensors(tmp_path / "split")
    assert invoke(*common, "--steps", "8", "--out", str(tmp_path / "split"), "--resume").exit_code == 0
    straight, split = ckpt_tensors(tmp_path / "straight"), ckpt_tensors(tmp_path / "split")
    assert_all_equal(straight, split)  # model, EMA, AdamW moments and step, generators, data order
    assert half["order/pos"] != split["order/pos"] or not torch.equal(half["order/perm"], split["order/perm"])
    assert all(not torch.equal(half[k], split[k]) for k in half if k.startswith(("model/", "ema/")) and "weight" in k)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_resume_after_sigkill_is_bit_exact(tmp_path):
    """A real kill at an arbitrary moment: the resumed run ends with the uninterrupted run's exact state."""
    common = [*MLP_ARGS, "--process", "edm", "--target", "x0", "--weighting", "edm", "--ckpt-every", "10"]
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "diffloss", "train", *common, "--steps", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / CHECKPOINT_FILE).exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = load_checkpoint(out / CHECKPOINT_FILE)[1]["step"]
    assert step >= 10 and step % 10 == 0
    total = str(step + 7)
    assert invoke(*common, "--steps", total, "--out", str(out), "--resume").exit_code == 0
    assert invoke(*common, "--steps", total, "--out", str(tmp_path / "straight")).exit_code == 0
    assert_all_equal(ckpt_tensors(out), ckpt_tensors(tmp_path / "straight"))


def one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--weighting", "nope"], "unknown weighting 'nope'"),
        (["--density", "nope"], "unknown level density 'nope'"),
        (["--process", "nope"], "unknown process 'nope'"),
        (["--target", "nope"], "unknown target 'nope'"),
        (["--precond", "karras"], "unknown preconditioning (--precond) 'karras'; choose one of: edm, none"),
        (["--backbone", "nope"], "unknown backbone 'nope'"),
        (["--backbone", "unet"], "needs image data"),
        (["--steps", "0"], "--steps must be > 0"),
        (["--steps", "-3"], "--steps must be > 0"),
        (["--batch", "2001"], "exceeds the 2000 samples"),
        (["--process", "edm", "--density", "uniform-t:discrete=true"], "needs a process with T discrete steps"),
        (["--process", "vp", "--density", "uniform-logsnr:lam_min=-40,lam_max=-30"], "misses the log-SNR range"),
    ],
)
def test_bad_input_one_line_nothing_written(tmp_path, extra, needle):
    args = [*MLP_ARGS, "--steps", "2", "--out", str(tmp_path / "out")]
    for i in range(0, len(extra), 2):  # the later occurrence wins in click; replace instead for clarity
        if extra[i] in args:
            j = args.index(extra[i])
            del args[j : j + 2]
    line = one_line_error(invoke(*args, *extra))
    assert needle in line
    assert not (tmp_path / "out").exists()


def test_existing_output_dir_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "out"
    args = [*MLP_ARGS, "--steps", "2", "--out", str(out)]
    assert invoke(*args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "is not empty" in one_line_error(invoke(*args))
    assert "exclude each other" in one_line_error(invoke(*args, "--resume", "--overwrite"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert invoke(*args, "--overwrite", "--seed", "5").exit_code == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 5


def test_resume_under_another_config_lists_the_differing_keys(tmp_path):
    out = tmp_path / "out"
    assert invoke(*MLP_ARGS, "--steps", "2", "--out", str(out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    changed = [*MLP_ARGS, "--steps", "4", "--out", str(out), "--resume", "--lr", "1e-3", "--weighting", "snr"]
    line = one_line_error(invoke(*changed))
    assert "differs in: lr, weighting.name, weighting.on" in line
    assert "other config" in one_line_error(invoke(*[a if a != "32" else "64" for a in MLP_ARGS], "--steps", "4",
                                                      "--out", str(out), "--resume"))  # fmt: skip
    assert "beyond --steps" in one_line_error(invoke(*MLP_ARGS, "--steps", "1", "--out", str(out), "--resume"))
    assert "does not exist" in one_line_error(
        invoke(*MLP_ARGS, "--steps", "4", "--out", str(tmp_path / "x"), "--resume")
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_checkpoint_is_refused(tmp_path, damage):
    out = tmp_path / "out"
    assert invoke(*MLP_ARGS, "--steps", "2", "--out", str(out)).exit_code == 0
    ckpt = out / CHECKPOINT_FILE
    raw = ckpt.read_bytes()
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw = raw[:-200] + bytes([raw[-200] ^ 0xFF]) + raw[-199:]
    else:
        raw = b"not a checkpoint at all"
    ckpt.write_bytes(raw)
    line = one_line_error(invoke(*MLP_ARGS, "--steps", "4", "--out", str(out), "--resume"))
    assert "truncated or corrupt" in line
    assert ckpt.read_bytes() == raw


def test_config_diff_lr_warm_up_and_ema_decay():
    assert config_diff({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 5}, "e": None}) == ["b.c", "b.d", "e"]
    cfg = small_config(lr=1e-3, warmup=4)
    assert [lr_at(cfg, s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert [logsnr_bucket(v) for v in (-11, -10, 0.1, 10, float("inf"))] == [
        "[-inf,-10)", "[-10,-5)", "[0,2.5)", "[10,inf)", "[10,inf)"
    ]  # fmt: skip


def test_window_record_buckets_by_logsnr():
    rec = window_record(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([20.0, 1.0, -20.0, 1.5]))
    assert rec == {"loss": 2.5, "loss_by_logsnr": {"[-inf,-10)": 3.0, "[0,2.5)": 3.0, "[10,inf)": 1.0}}
    assert list(rec["loss_by_logsnr"]) == ["[-inf,-10)", "[0,2.5)", "[10,inf)"]
