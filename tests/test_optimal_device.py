"""``--device`` / ``--precision`` for the optimal loss: one-line refusals (CPU), the stored-as-is (bf16) path on the
CPU, and CUDA against CPU (marked ``cuda``: skipped without a GPU)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffloss.cli import cli as diffloss_cli
from diffloss.optimal import optimal_loss
from diffloss.optimal.exact import centered_rows, exact_optimal_loss, query_block
from diffloss.optimal.posterior import (
    MODE_MIN_MASS,
    NEAR_PER_QUERY,
    ModePairs,
    Rows,
    mode_sums,
    near_pairs,
    posterior_sums,
)
from diffloss.optimal.stochastic import stochastic_optimal_loss

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
SIG = np.array([0.05, 0.3, 1.0, 3.0, 30.0])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLOSS_CACHE", str(tmp_path / "cache"))


def clustered(n=600, dim=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = 3 * rng.standard_normal((8, dim))
    return (centers[rng.integers(0, 8, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)


def run(tmp_path, *args):
    out = tmp_path / "o.json"
    data = tmp_path / "x.npy"
    np.save(data, clustered(120, 3))
    r = CliRunner().invoke(diffloss_cli, ["optimal-loss", "--data", str(data), "--sigmas", "0.5,2", "--queries",
                                          "64", "--json", str(out), "--quiet", *args])  # fmt: skip
    return r, out


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_cuda_without_cuda_is_one_line_exit_2(tmp_path, device):
    r, out = run(tmp_path, "--device", device)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "CUDA is not available" in lines[0], r.output
    assert not out.exists()


@needs_cuda
def test_gpu_index_beyond_the_machine_is_one_line_exit_2(tmp_path):
    r, out = run(tmp_path, "--device", f"cuda:{torch.cuda.device_count()}")
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "GPU(s)" in lines[0], r.output
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [(["--precision", "bf16"], "needs fp32 Gram products"), (["--device", "cpu", "--precision", "tf32"], "CUDA")],
)
def test_unsupported_precision_is_one_line_exit_2(tmp_path, args, message):
    r, out = run(tmp_path, *args)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.output
    assert not out.exists()


def test_cpu_device_and_thread_settings_give_the_same_numbers():
    x = clustered()
    kw = dict(queries=256, device="cpu", max_memory=2**20, cache=False)  # chunks of 85 rows: 8 chunks
    ref = optimal_loss(x, SIG, threads=1, **kw)
    for threads in ({"threads": 0}, {"threads": 2}, {"threads": 3}):
        r = optimal_loss(x, SIG, **kw, **threads)
        np.testing.assert_allclose(r.x0_mse, ref.x0_mse, rtol=1e-6, atol=1e-12)


def test_bf16_storage_is_its_bf16_values_computed_in_fp32():
    # the path the ImageNet-size GPU benchmark takes (rows kept as stored, centered chunk by chunk), on the CPU
    x16 = torch.from_numpy(clustered()).bfloat16()
    exact = exact_optimal_loss(x16.float().numpy(), SIG, queries=512, seed=2)
    stored = exact_optimal_loss(x16, SIG, queries=512, seed=2, chunk_rows=100)
    np.testing.assert_allclose(stored.x0_mse, exact.x0_mse, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(stored.stderr, exact.stderr, rtol=1e-3, atol=1e-7)


# ---- CUDA against CPU ------------------------------------------------------------------------------------------
def assert_same_curve(a, b, rtol=1e-4):
    tol = rtol * np.maximum(np.abs(a.x0_mse), 1e-3 * np.abs(a.x0_mse).max())
    np.testing.assert_array_less(np.abs(a.x0_mse - b.x0_mse), tol + 1e-12)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-2, atol=1e-9)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("labels", [False, True])
def test_exact_on_cuda_matches_cpu(labels):
    x = clustered()
    lab = np.arange(len(x)) % 3 if labels else None
    cpu = exact_optimal_loss(x, SIG, queries=1024, seed=1, labels=lab)
    gpu = exact_optimal_loss(x, SIG, queries=1024, seed=1, labels=lab, device="cuda", chunk_rows=128)
    assert_same_curve(cpu, gpu)


@pytest.mark.cuda
@needs_cuda
def test_exact_on_cuda_with_many_duplicates_redoes_the_overflowing_block():
    x = clustered(200)
    x = np.concatenate([x, np.repeat(x[:2], 3 * NEAR_PER_QUERY, 0)])  # more near entries than the fixed capacity
    cpu = exact_optimal_loss(x, SIG, queries=512, seed=3)
    gpu = exact_optimal_loss(x, SIG, queries=512, seed=3, device="cuda")
    assert_same_curve(cpu, gpu)


@pytest.mark.cuda
@needs_cuda
def test_bf16_storage_on_cuda_matches_its_fp32_values_on_cpu():
    x16 = torch.from_numpy(clustered()).bfloat16()
    cpu = exact_optimal_loss(x16.float().numpy(), SIG, queries=512, seed=4)
    gpu = exact_optimal_loss(x16.cuda(), SIG, queries=512, seed=4, max_memory=2**22)
    assert_same_curve(cpu, gpu)


@pytest.mark.cuda
@needs_cuda
def test_tf32_is_within_the_monte_carlo_error_of_fp32():
    x = clustered(2000, 64)
    sig = np.array([1.0, 3.0, 10.0])
    fp32 = optimal_loss(x, sig, queries=2048, device="cuda", cache=False)
    tf32 = optimal_loss(x, sig, queries=2048, device="cuda", precision="tf32", cache=False)
    assert np.all(np.abs(tf32.x0_mse - fp32.x0_mse) <= 4 * fp32.stderr + 1e-2 * fp32.x0_mse)


@pytest.mark.cuda
@needs_cuda
def test_stochastic_on_cuda_matches_cpu():
    x = clustered()
    kw = dict(subset_size=100, queries=512, seed=5)
    cpu = stochastic_optimal_loss(x, SIG, **kw)
    gpu = stochastic_optimal_loss(x, SIG, device="cuda", **kw)
    np.testing.assert_allclose(gpu.x0_mse, cpu.x0_mse, rtol=1e-4, atol=1e-9)


@pytest.mark.cuda
@needs_cuda
def test_cli_on_cuda_matches_cpu(tmp_path):
    docs = {}
    for device in ("cpu", "cuda"):
        (tmp_path / device).mkdir()
        r, out = run(tmp_path / device, "--device", device)
        assert r.exit_code == 0, r.output
        docs[device] = json.loads(out.read_text())
    cpu, gpu = ([lv["x0_mse"] for lv in docs[d]["levels"]] for d in ("cpu", "cuda"))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4)


@pytest.mark.parametrize("duplicates", [0, 3 * NEAR_PER_QUERY])
def test_the_sync_free_cuda_code_path_matches_the_cpu_path_on_the_cpu(duplicates):
    # posterior_sums / mode_sums with sync_free=True run what CUDA runs (no level skipping, near pairs at fixed
    # capacity with the overflowing call redone, mode rows by argmax), here on the CPU
    x = clustered(300)
    x = np.concatenate([x, np.repeat(x[:1], duplicates, 0)])
    rows = Rows.of(centered_rows(x))
    idx, eps = query_block(len(x), x.shape[1], [7], 0, 128, None)
    idx[:8] = 0  # sources with many duplicates (when there are)
    x0, e = rows.take(torch.from_numpy(idx)), torch.from_numpy(eps)
    ref = posterior_sums(x0, e, rows, SIG, chunk_rows=64)
    new = posterior_sums(x0, e, rows, SIG, chunk_rows=64, sync_free=True)
    for a, b in zip(ref.inner_terms(), new.inner_terms()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6 * float(a.abs().max()))
    torch.testing.assert_close(new.mode_weight(), ref.mode_weight(), rtol=1e-5, atol=1e-9)
    mode = ref.mode_weight() >= MODE_MIN_MASS
    assert torch.equal(new.best_row[mode], ref.best_row[mode])
    lv, qi = torch.nonzero(mode, as_tuple=True)
    ids, pair_mode = torch.unique(ref.best_row[lv, qi].long(), return_inverse=True)
    pairs = ModePairs(qi, pair_mode, torch.from_numpy(SIG)[lv], ref.shift[lv, qi])
    args = (x0, e, rows.take(ids), pairs, rows)
    torch.testing.assert_close(mode_sums(*args, chunk_rows=64, pair_block=16, sync_free=True),
                               mode_sums(*args, chunk_rows=64, threads=2), rtol=1e-5, atol=1e-6)  # fmt: skip


def test_near_pairs_at_fixed_capacity_flag_an_overflow():
    d = torch.zeros(2, 4 * NEAR_PER_QUERY)  # every entry near
    overflow = torch.zeros((), dtype=torch.bool)
    qi, ri = near_pairs(d, torch.ones(2), torch.ones(d.shape[1]), overflow)
    assert len(qi) == 2 * NEAR_PER_QUERY and bool(overflow)
    overflow.zero_()
    near_pairs(d[:, :NEAR_PER_QUERY], torch.ones(2), torch.ones(NEAR_PER_QUERY), overflow)
    assert not bool(overflow)
