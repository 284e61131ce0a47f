"""``sample``, ``eval`` and ``diagnose`` on a device and under torchrun: the seed alone fixes the samples (any batch,
any rows, any number of processes), two gloo processes give the single process's outputs, bad device settings are
one-line errors that write nothing; on a GPU (marked ``cuda``) the results equal the CPU's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffloss.cli import cli
from diffloss.loader import load_trained
from diffloss.process import get_process
from diffloss.sample import generate, sample_model, x0_predictor
from diffloss.target import get_target

SAMPLE = ["-n", "7", "--steps", "4", "--sampler", "edm", "--s-churn", "5", "--batch", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A moons MLP trained for 6 steps through the train API."""
    from conftest import small_train_config
    from diffloss.train import train

    out = tmp_path_factory.mktemp("device") / "run"
    train(small_train_config(), out)
    return out


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node NPROC -m diffloss ARGS`` on the CPU (gloo)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.run([*cmd, "-m", "diffloss", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("sampler, extra", [("heun", {}), ("ddim", {"eta": 1.0}), ("ddpm", {})])
def test_a_row_depends_on_the_seed_and_its_index_only(sampler, extra):
    """Asking for rows 3..6 of 8, in any batch size, gives rows 3..6 of the whole run (stochastic samplers too)."""
    proc = get_process("vp", discrete=True)
    D = x0_predictor(lambda x_t, t: 0.3 * x_t, proc, get_target("eps"))
    kw = dict(process=proc, steps=5, seed=7, sampler=sampler, dtype=torch.float64, **extra)
    whole = generate(D, (8, 3), batch=8, **kw)
    torch.testing.assert_close(generate(D, (8, 3), batch=3, **kw), whole)
    torch.testing.assert_close(generate(D, (8, 3), batch=2, rows=range(3, 7), **kw), whole[3:7])
    assert generate(D, (8, 3), rows=range(4, 4), **kw).shape == (0, 3)
    assert not torch.equal(whole, generate(D, (8, 3), **{**kw, "seed": 8}))


def test_bf16_sampling_on_the_cpu_runs_near_fp32(run):
    model = load_trained(run)
    kw = dict(steps=4, sampler="heun", seed=0)
    fp32 = sample_model(model, 16, **kw)
    bf16 = sample_model(model, 16, **kw, precision="bf16")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert (bf16 - fp32).abs().max() < 0.1 * fp32.abs().max()


@pytest.mark.slow
def test_compiled_sampling_equals_eager(run):
    """--compile on the CPU (inductor: a C++ compiler, a minute or so): the same samples to rounding."""
    model, kw = load_trained(run), dict(steps=3, sampler="heun", seed=0)
    torch.testing.assert_close(sample_model(model, 8, **kw, compile=True), sample_model(model, 8, **kw))


def test_torchrun_sample_equals_one_process(run, tmp_path):
    one, two = tmp_path / "one.npy", tmp_path / "two.npy"
    assert invoke("sample", "--ckpt", str(run), *SAMPLE, "--out", str(one), "--quiet").exit_code == 0
    r = torchrun("sample", "--ckpt", str(run), *SAMPLE, "--device", "cpu", "--out", str(two), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote 7 samples") == 1  # rank 0 alone writes and reports
    np.testing.assert_allclose(np.load(two), np.load(one), rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npy", "two.npy"]  # no temporary files left


def test_torchrun_eval_and_diagnose_equal_one_process(run, tmp_path):
    """eval: features of 9 samples and 11 reference rows split over 2 ranks; diagnose: 3 query blocks split 1 + 2."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "s.npy", rng.uniform(-1, 1, (9, 784)).astype(np.float32))
    np.save(tmp_path / "r.npy", rng.uniform(-1, 1, (11, 784)).astype(np.float32))
    evaluation = ["eval", "--samples", str(tmp_path / "s.npy"), "--ref", str(tmp_path / "r.npy"), "--kid-subset", "5"]
    diagnosis = ["diagnose", "--ckpt", str(run), "--data", "moons", "--levels", "3", "--queries", "600"]
    for name, args in (("eval", evaluation), ("diagnose", diagnosis)):
        one, two = tmp_path / f"{name}-1.json", tmp_path / f"{name}-2.json"
        assert invoke(*args, "--json", str(one), "--quiet").exit_code == 0
        r = torchrun(*args, "--device", "cpu", "--json", str(two), "--quiet")
        assert r.returncode == 0, r.stderr[-3000:]
        a, b = json.loads(one.read_text()), json.loads(two.read_text())
        if name == "eval":
            assert b["execution"]["world_size"] == 2 and a["execution"]["world_size"] == 1
            for metric in a["metrics"]:
                assert b["metrics"][metric]["value"] == pytest.approx(a["metrics"][metric]["value"], rel=1e-4)
        else:
            for row_a, row_b in zip(a["levels"], b["levels"], strict=True):
                assert row_b["model_x0_mse"] == pytest.approx(row_a["model_x0_mse"], rel=1e-6)
                assert row_b["optimal_x0_mse"] == pytest.approx(row_a["optimal_x0_mse"], rel=1e-9)


BAD = [
    pytest.param(
        ["--device", "cuda"], "CUDA is not available",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
    ),
    pytest.param(
        ["--device", "cuda:7"], "cuda:7",
        marks=pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has 8 GPUs"),
    ),
    (["--device", "cpu", "--precision", "tf32"], "tf32 needs a CUDA device"),
    (["--device", "tpu"], "is not one of auto, cpu, cuda"),
]  # fmt: skip


@pytest.mark.parametrize("command", ["sample", "eval", "diagnose"])
@pytest.mark.parametrize("bad, message", BAD)
def test_bad_device_settings_are_one_line_errors_that_write_nothing(run, tmp_path, command, bad, message):
    np.save(tmp_path / "s.npy", np.zeros((4, 2), np.float32))
    args = {
        "sample": ["sample", "--ckpt", str(run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "o.npy")],
        "eval": ["eval", "--samples", str(tmp_path / "s.npy"), "--ref", "moons", "--json", str(tmp_path / "o.json")],
        "diagnose": ["diagnose", "--ckpt", str(run), "--data", "moons", "--queries", "8", "--json",
                     str(tmp_path / "o.json")],
    }[command]  # fmt: skip
    r = invoke(*args, *bad)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Error:") and message in r.output and len(r.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]


@pytest.mark.cuda
@pytest.mark.parametrize("sampler, extra", [("heun", {}), ("edm", {"churn": None})])
def test_sampling_on_cuda_equals_the_cpu(run, sampler, extra):
    from diffloss.sample import Churn

    kw = dict(steps=6, sampler=sampler, seed=2, batch=5)
    if "churn" in extra:
        kw["churn"] = Churn(s_churn=5)
    cpu = sample_model(load_trained(run), 12, **kw, device="cpu")
    gpu = sample_model(load_trained(run), 12, **kw, device="cuda")
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_bf16_and_tf32_sampling_on_cuda_run_near_fp32(run):
    kw = dict(steps=6, sampler="heun", seed=2, device="cuda")
    fp32 = sample_model(load_trained(run), 64, **kw)
    for precision in ("bf16", "tf32"):
        low = sample_model(load_trained(run), 64, **kw, precision=precision)
        assert torch.isfinite(low).all() and (low - fp32).abs().max() < 0.1 * fp32.abs().max()


@pytest.mark.cuda
def test_diagnose_and_eval_on_cuda_equal_the_cpu(run, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "s.npy", rng.uniform(-1, 1, (50, 784)).astype(np.float32))
    for name, args in (
        ("eval", ["eval", "--samples", str(tmp_path / "s.npy"), "--ref", "mnist:test", "--kid-subset", "20"]),
        ("diagnose", ["diagnose", "--ckpt", str(run), "--data", "moons", "--levels", "4", "--queries", "300"]),
    ):
        docs = []
        for device in ("cpu", "cuda"):
            out = tmp_path / f"{name}-{device}.json"
            assert invoke(*args, "--device", device, "--json", str(out), "--quiet").exit_code == 0
            docs.append(json.loads(out.read_text()))
        if name == "eval":
            for metric, m in docs[0]["metrics"].items():
                assert docs[1]["metrics"][metric]["value"] == pytest.approx(m["value"], rel=1e-3, abs=1e-6)
        else:
            for a, b in zip(docs[0]["levels"], docs[1]["levels"], strict=True):
                assert b["model_x0_mse"] == pytest.approx(a["model_x0_mse"], rel=1e-4)
                assert b["optimal_x0_mse"] == pytest.approx(a["optimal_x0_mse"], rel=1e-9)


@pytest.mark.cuda
@pytest.mark.parametrize("sampler", ["heun", "edm"])
def test_the_sampling_loop_never_waits_for_the_gpu(run, sampler):
    """CUDA's sync debug mode raises on any host-device synchronization inside the step loop."""
    from diffloss.sample import Churn, RowNoise, sample, step_levels

    model = load_trained(run).for_inference("cuda")
    D = x0_predictor(model.network, model.process, model.target, model.cond)
    sigmas = step_levels(model.process, 6)
    x = (sigmas[0].item() * torch.randn(8, *model.shape)).cuda()
    churn = Churn(s_churn=5) if sampler == "edm" else Churn()
    draw = lambda: sample(D, x, sigmas, sampler=sampler, churn=churn, generator=RowNoise(0, range(8)))  # noqa: E731
    draw()  # warm-up: library initialization may synchronize once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = draw()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out).all()


@pytest.mark.cuda
def test_a_diffusers_model_samples_on_cuda_as_on_the_cpu(tmp_path, tiny_diffusers):
    from diffloss.loader import load_diffusers

    tiny_diffusers(tmp_path)
    kw = dict(steps=4, sampler="ddpm", seed=1, clip=1.0)
    cpu = sample_model(load_diffusers(tmp_path), 6, **kw, device="cpu")
    gpu = sample_model(load_diffusers(tmp_path), 6, **kw, device="cuda")
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)
