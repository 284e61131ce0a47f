"""``benchmarks/optimal_loss.py``: the functions its CUDA run uses (data generation on the device, bf16 storage,
roofline, diffloss part, report), run on the CPU at small size."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "optimal_loss.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_optimal_loss", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (its dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


def test_cuda_code_path_runs_on_the_cpu_at_small_size():
    bench, cpu = _bench(), torch.device("cpu")
    x = bench.clustered(600, 16, clusters=8, device="cpu", dtype=torch.bfloat16)
    assert x.dtype == torch.bfloat16 and x.shape == (600, 16)
    sig = np.geomspace(0.5, 20, 4)
    a = bench.part_a(x, sig, 256, cpu)
    c = bench.part_c(x, len(sig), 256, cpu)
    curve = bench.part_curve(cpu, 600, 16, 4)
    assert a["seconds"] > 0 and c["seconds"] > 0 and curve["queries_used"] >= 1024
    assert np.all(np.diff(curve["x0_mse"]) >= -4 * np.asarray(curve["stderr"][1:]))  # J* rises with s
    part = {"seconds": 1.0, "cpu_seconds": 1.0, "threads": 1, "peak_rss_mb": 1.0, "load_before_after": [0, 0]}
    doc = {"device": "cuda", "gpu": "test GPU", "torch": torch.__version__, "machine": "test",
           "cases": {"cifar": bench._entry(bench.CASES["cifar"], {"a": part, "c": part}, {"a_over_c": 1.0})},
           "imagenet_curve": {**curve, "seconds": 2.0}}  # fmt: skip
    text = bench.markdown(doc)
    assert "test GPU" in text and "a over c = **1.00**" in text and "ImageNet-64-sized" in text
