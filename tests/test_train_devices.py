"""Training on devices and in parallel: torchrun data parallelism equals one process with the same global batch;
device, precision and world-size errors are one line; bf16 autocast trains on the CPU; CUDA runs resume on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import small_train_config
from diffloss.checkpoint import load_checkpoint
from diffloss.cli import cli
from diffloss.device import World
from diffloss.errors import DifflossError
from diffloss.train import CHECKPOINT_FILE, Execution, Run

ARGS = ["--backbone", "mlp", "--width", "32", "--depth", "1", "--threads", "1", "--quiet", "--log-every", "5"]
MOONS = ["--data", "moons", "--batch", "16", *ARGS]
# conditional, label dropout: every random draw of a batch (labels, levels, noise) is split over the ranks
DIGITS = ["--data", "digits", "--batch", "12", "--conditional", "--label-dropout", "0.3", *ARGS]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node NPROC -m diffloss train ARGS`` on this machine (gloo on the CPU)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port"]
    cmd += [str(free_port()), "-m", "diffloss", "train", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def invoke(*args: str):
    return CliRunner().invoke(cli, ["train", *args])


def weights(out) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(out / CHECKPOINT_FILE)
    return {k: v for k, v in tensors.items() if k.startswith(("model/", "ema/"))}


def max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)).item() for k in a)


@pytest.mark.parametrize("data", [MOONS, DIGITS], ids=["moons", "digits-conditional"])
def test_two_gloo_processes_equal_one_process(tmp_path, data):
    """20 updates by 2 torchrun processes (each half of the global batch) give the weights of 1 process."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert invoke(*data, "--steps", "20", "--out", str(one)).exit_code == 0
    done = torchrun(2, *data, "--steps", "20", "--out", str(two))
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_rel_diff(weights(two), weights(one)) <= 1e-5
    assert load_checkpoint(two / CHECKPOINT_FILE)[1]["execution"]["world_size"] == 2
    # the metrics are the global batch's: same losses as the single process (to float tolerance)
    lines = [(two / "metrics.jsonl").read_text().splitlines(), (one / "metrics.jsonl").read_text().splitlines()]
    assert len(lines[0]) == len(lines[1]) == 4

    # resuming the 2-process checkpoint in one process is refused in one line
    result = invoke(*data, "--steps", "25", "--out", str(two), "--resume")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: --resume: the checkpoint was written by 2 process(es), this run has 1; resume with the same number "
        "(torchrun --nproc-per-node)"
    ]


def test_batch_must_split_over_the_ranks():
    cfg = small_train_config(batch=15)
    with pytest.raises(DifflossError, match="--batch 15 does not split over 2 processes; give a multiple of 2"):
        Run.create(cfg, execution=Execution(world=World(rank=0, size=2)))


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--precision", "tf32"], "--precision tf32 needs a CUDA device"),
        (["--device", "tpu"], "--device 'tpu' is not one of auto, cpu, cuda, cuda:N"),
        (["--threads", "-1"], "--threads must be >= 0"),
    ],
)
def test_device_errors_are_one_line(tmp_path, extra, needle):
    out = tmp_path / "run"
    result = invoke(*MOONS, "--steps", "2", "--out", str(out), *extra)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.output
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_cuda_without_cuda_is_one_line(tmp_path, device):
    result = invoke(*MOONS, "--steps", "2", "--out", str(tmp_path / "run"), "--device", device)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: --device {device}: CUDA is not available on this machine; use --device cpu (or auto)"
    )


def test_bf16_trains_on_the_cpu_and_differs_from_fp32(tmp_path):
    """bf16 autocast on the CPU runs; parameters stay float32; its updates are not the fp32 ones."""
    assert invoke(*MOONS, "--steps", "5", "--out", str(tmp_path / "bf16"), "--precision", "bf16").exit_code == 0
    assert invoke(*MOONS, "--steps", "5", "--out", str(tmp_path / "fp32")).exit_code == 0
    a, b = weights(tmp_path / "bf16"), weights(tmp_path / "fp32")
    assert all(v.dtype == torch.float32 for v in a.values())
    assert 0 < max_rel_diff(a, b) < 0.1


@pytest.mark.cuda
def test_cuda_run_resumes_on_the_cpu_and_resumes_bit_exact_on_cuda(tmp_path):
    """A GPU checkpoint loads on the CPU (and trains on); on the GPU, kill-and-resume is bit-exact."""
    common = [*MOONS, "--device", "cuda"]
    assert invoke(*common, "--steps", "10", "--ckpt-every", "5", "--out", str(tmp_path / "gpu")).exit_code == 0
    assert invoke(*MOONS, "--steps", "12", "--out", str(tmp_path / "gpu"), "--resume", "--device", "cpu").exit_code == 0
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert invoke(*common, "--steps", "10", "--out", str(straight)).exit_code == 0
    assert invoke(*common, "--steps", "5", "--out", str(split)).exit_code == 0
    assert invoke(*common, "--steps", "10", "--out", str(split), "--resume").exit_code == 0
    assert max_rel_diff(weights(split), weights(straight)) == 0


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_cuda_precisions_train(tmp_path, precision):
    out = tmp_path / precision
    result = invoke(*MOONS, "--steps", "5", "--out", str(out), "--device", "cuda", "--precision", precision)
    assert result.exit_code == 0
    assert load_checkpoint(out / CHECKPOINT_FILE)[1]["execution"]["precision"] == precision


def test_compiled_network_trains_like_the_eager_one(tmp_path):
    """--compile (torch.compile of the network) changes speed, not the updates (to float tolerance)."""
    assert invoke(*MOONS, "--steps", "5", "--out", str(tmp_path / "compiled"), "--compile").exit_code == 0
    assert invoke(*MOONS, "--steps", "5", "--out", str(tmp_path / "eager")).exit_code == 0
    assert max_rel_diff(weights(tmp_path / "compiled"), weights(tmp_path / "eager")) < 1e-4
    config = json.loads((tmp_path / "compiled" / "config.json").read_text())
    assert config["execution"] == {"device": "cpu", "precision": "fp32", "compile": True, "world_size": 1}
