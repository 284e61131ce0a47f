"""Class conditioning and classifier-free guidance: label dropout, guidance, conditional diagnosis, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from diffloss.checkpoint import load_checkpoint, save_checkpoint
from diffloss.classes import class_labels, drop_labels
from diffloss.cli import cli
from diffloss.diagnose import diagnose
from diffloss.errors import DifflossError
from diffloss.levels import Levels
from diffloss.loader import DiffusionModel, load_trained
from diffloss.models import Denoiser
from diffloss.optimal.exact import exact_optimal_loss
from diffloss.process import get_process
from diffloss.sample import DDPM_SAMPLERS, SAMPLERS, guided_x0_predictor, sample_model, x0_predictor
from diffloss.target import get_target
from diffloss.train import CHECKPOINT_FILE, Run, TrainConfig

TINY = ["--backbone", "mlp", "--width", "32", "--depth", "1", "--batch", "16", "--quiet"]
DIGITS_COND = ["--data", "digits", "--conditional", *TINY]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    """A conditional MLP run on digits (10 classes), jointly trained with label dropout 0.5."""
    out = tmp_path_factory.mktemp("cond") / "run"
    args = ["train", *DIGITS_COND, "--label-dropout", "0.5", "--steps", "30", "--lr", "1e-3", "--warmup", "0"]
    assert invoke(*args, "--target", "v", "--out", str(out)).exit_code == 0
    return out


@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("uncond") / "run"
    assert invoke("train", "--data", "digits", *TINY, "--steps", "2", "--out", str(out)).exit_code == 0
    return out


# ---- label dropout -------------------------------------------------------------------------------------------
def test_label_dropout_rate_matches_p_and_is_reproducible_from_the_seed():
    labels = torch.arange(200_000) % 10
    p = 0.1
    a = drop_labels(labels, p, 10, torch.Generator().manual_seed(5))
    b = drop_labels(labels, p, 10, torch.Generator().manual_seed(5))
    c = drop_labels(labels, p, 10, torch.Generator().manual_seed(6))
    dropped = a == 10
    rate = dropped.double().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / len(labels)) ** 0.5  # binomial standard error
    assert torch.equal(a[~dropped], labels[~dropped])  # kept labels are unchanged
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(drop_labels(labels, 0.0, 10, torch.Generator()), labels)


def test_training_drops_labels_at_the_configured_rate_from_the_noise_generator():
    cfg = TrainConfig(
        data="digits", process=get_process("vp-cosine").to_dict(), target="eps",
        weighting={"name": "constant", "on": "eps"}, density={"name": "uniform-t"},
        backbone={"name": "mlp", "width": 16, "depth": 1}, steps=1, batch=8,
        conditional=True, num_classes=10, label_dropout=0.3,
    )  # fmt: skip
    run = Run.create(cfg)
    seen = []

    def spy(x_t, c, labels):
        seen.append(labels)
        return torch.zeros_like(x_t)

    rows = torch.randint(0, run.data.n, (40_000,), generator=torch.Generator().manual_seed(0))
    run.loss(spy, rows, torch.Generator().manual_seed(1), dropout=0.3)
    run.loss(spy, rows, torch.Generator().manual_seed(1), dropout=0.3)
    truth = torch.from_numpy(run.data.labels)[rows]
    null = seen[0] == 10
    assert abs(null.double().mean().item() - 0.3) < 5 * (0.3 * 0.7 / len(rows)) ** 0.5
    assert torch.equal(seen[0][~null], truth[~null]) and torch.equal(seen[0], seen[1])


# ---- guidance ------------------------------------------------------------------------------------------------
def test_guidance_zero_is_the_unconditional_prediction_bit_exact(cond_run):
    model = load_trained(cond_run)
    assert model.num_classes == 10 and model.network.config()["num_classes"] == 10
    net, proc, tgt = model.network, model.process, model.target
    g = torch.Generator().manual_seed(0)
    x, s = torch.randn(12, 1, 8, 8, generator=g), torch.full((12,), 0.7)
    labels = torch.arange(12) % 10
    null = torch.full((12,), 10)
    d_null = x0_predictor(lambda x_t, c: net(x_t, c, null), proc, tgt)(x, s)
    d_cond = x0_predictor(lambda x_t, c: net(x_t, c, labels), proc, tgt)(x, s)
    assert torch.equal(x0_predictor(net, proc, tgt)(x, s), d_null)  # no labels = the null label
    assert not torch.allclose(d_null, d_cond)  # the class matters
    assert torch.equal(guided_x0_predictor(net, proc, tgt, 10, 0.0)(x, s, labels), d_null)
    assert torch.equal(guided_x0_predictor(net, proc, tgt, 10, 1.0)(x, s, labels), d_cond)
    w3 = guided_x0_predictor(net, proc, tgt, 10, 3.0)(x, s, labels)
    torch.testing.assert_close(w3, 3 * d_cond - 2 * d_null)


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s not in DDPM_SAMPLERS])  # ddpm: discrete VP runs only
def test_guidance_zero_samples_are_the_unconditional_samples_for_every_sampler(cond_run, sampler):
    model = load_trained(cond_run)
    kw = dict(steps=3, sampler=sampler, seed=2, batch=5)
    uncond = sample_model(model, 12, **kw)
    guided = sample_model(model, 12, **kw, labels=torch.arange(12) % 10, guidance=0.0)
    cond = sample_model(model, 12, **kw, labels=torch.arange(12) % 10, guidance=1.0)
    assert torch.equal(uncond, guided) and not torch.equal(uncond, cond)


def test_class_all_gives_equal_counts_in_class_order_and_one_grid_row_per_class(cond_run, tmp_path):
    labels = class_labels("all", 30, 10)
    assert torch.equal(torch.bincount(labels), torch.full((10,), 3)) and torch.equal(labels, labels.sort().values)
    assert torch.equal(class_labels("4", 5, 10), torch.full((5,), 4))
    out = tmp_path / "all.npy"
    r = invoke("sample", "--ckpt", str(cond_run), "--class", "all", "--n", "30", "--steps", "2", "--guidance", "2",
               "--out", str(out), "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert np.load(out).shape == (30, 1, 8, 8)
    assert np.array_equal(np.load(out.with_suffix(".labels.npy")), labels.numpy())  # for `diffloss eval --labels`
    h, w = np.asarray(Image.open(out.with_suffix(".png"))).shape
    scale = 4  # 8x8 digits are enlarged to 32 pixels
    assert (h // scale, w // scale) == (10 * 9 + 1, 3 * 9 + 1)  # 10 rows (classes) of 3 cells, 1-pixel padding


# ---- conditional diagnosis -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def labelled() -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping classes in 3-D, so that the class changes the posterior at moderate noise."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 150)
    x = rng.normal(size=(3, 3))[y] * 0.8 + 0.5 * rng.normal(size=(150, 3))
    return x.astype(np.float32), y


def class_bayes_model(x: np.ndarray, y: np.ndarray, process) -> DiffusionModel:
    """The exact conditional x0-denoiser: for each query, the posterior mean over the rows of its class only."""
    rows, classes = torch.from_numpy(x).double(), torch.from_numpy(y)

    def denoiser(x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        a, s = (v[:, None] for v in process.alpha_sigma(t.double()))
        z = x_t.double() / a
        logit = -((z[:, None, :] - rows[None]) ** 2).sum(-1) / (2 * (s / a) ** 2)
        logit = logit.masked_fill(labels[:, None] != classes[None], -torch.inf)  # only the query's class
        return torch.softmax(logit, 1) @ rows

    return DiffusionModel(denoiser, process, get_target("x0"), (x.shape[1],), num_classes=3)


def test_conditional_exact_denoiser_has_zero_gap_to_the_conditional_optimal_loss(labelled):
    x, y = labelled
    proc = get_process("vp")
    sigmas = np.array([0.05, 0.3, 1.0, 3.0])
    levels = Levels.from_logsnr(proc, torch.from_numpy(-2 * np.log(sigmas)))
    d = diagnose(class_bayes_model(x, y, proc), x, levels, queries=512, seed=1, labels=y)
    assert d.conditional and d.warning() is None
    assert np.all(d.gap_x0 <= 1e-9 + 1e-6 * d.optimal_x0)
    assert np.all(np.abs(d.paired_x0) <= 4 * d.paired_x0_se + 1e-9)
    cond = exact_optimal_loss(x, sigmas, queries=2048, seed=2, labels=y)  # independent draws, other estimator
    assert np.all(np.abs(cond.x0_mse - d.optimal_x0) <= 4 * np.hypot(cond.stderr, d.optimal_x0_se) + 1e-12)
    uncond = exact_optimal_loss(x, sigmas, queries=2048, seed=2)
    assert uncond.x0_mse[2] > cond.x0_mse[2] + 4 * np.hypot(uncond.stderr[2], cond.stderr[2])  # not vacuous


def test_floor_of_conditional_training_is_the_brute_force_bayes_loss_under_label_dropout(
    labelled, tmp_path, monkeypatch
):
    """``compute_table(label_dropout=p)``: the per-level x0 MSE of the Bayes predictor of a run that drops labels
    with probability p (class posterior mean when the label is kept, posterior over all rows when dropped), checked
    against that predictor's loss by brute-force Monte Carlo on fresh draws."""
    from diffloss.data.dataset import Dataset
    from diffloss.optimal.reference import compute_table

    monkeypatch.setenv("DIFFLOSS_CACHE", str(tmp_path))
    x, y = labelled
    proc, p = get_process("vp"), 0.3
    lam, floor = map(np.asarray, compute_table(Dataset(x, (3,), "labelled", labels=y), proc, 6, label_dropout=p))
    lam_u, uncond = map(np.asarray, compute_table(Dataset(x, (3,), "labelled", labels=y), proc, 6))
    assert np.array_equal(lam, lam_u) and np.all(floor <= uncond + 1e-12)
    rng = np.random.default_rng(11)
    rows, n = torch.from_numpy(x).double(), 40_000
    for level, want in zip(lam, floor):
        s = float(np.exp(-level / 2))
        i = rng.integers(0, len(x), n)
        z = rows[i] + s * torch.from_numpy(rng.normal(size=(n, 3)))  # x~ = x_t / alpha = x0 + s * eps
        logit = -((z[:, None, :] - rows[None]) ** 2).sum(-1) / (2 * s**2)
        keep = torch.from_numpy(rng.random(n) >= p)[:, None] & (
            torch.from_numpy(y[i])[:, None] != torch.from_numpy(y)[None]
        )
        mse = ((torch.softmax(logit.masked_fill(keep, -torch.inf), 1) @ rows - rows[i]) ** 2).mean(1).numpy()
        assert abs(mse.mean() - want) <= 4 * mse.std() / np.sqrt(n) + 0.02 * want, (level, mse.mean(), want)
    assert floor[0] < uncond[0] * 0.9  # the classes matter at the noisiest level: the check is not vacuous


def test_optimal_loss_file_with_conditional_training_is_refused(tmp_path):
    report = tmp_path / "j.json"
    assert invoke("optimal-loss", "--data", "digits", "--sigmas", "0.1,1", "--queries", "64", "--json", str(report),
                  "--quiet").exit_code == 0  # fmt: skip
    result = CliRunner().invoke(cli, ["train", *DIGITS_COND, "--steps", "1", "--weighting", "optimal",
                                      "--optimal-loss", str(report), "--out", str(tmp_path / "run")])  # fmt: skip
    assert "unconditional J*" in one_line_error(result) and not (tmp_path / "run").exists()


def test_diagnose_conditional_cli_reports_the_conditional_optimum(cond_run, tmp_path):
    common = ["diagnose", "--ckpt", str(cond_run), "--data", "digits", "--sigmas", "0.5,2", "--queries", "64",
              "--quiet"]  # fmt: skip
    assert invoke(*common, "--conditional", "--json", str(tmp_path / "c.json")).exit_code == 0
    assert invoke(*common, "--json", str(tmp_path / "u.json")).exit_code == 0
    c, u = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "cu")
    assert c["conditional"] is True and u["conditional"] is False
    assert all(a["optimal_x0_mse"] < b["optimal_x0_mse"] for a, b in zip(c["levels"], u["levels"]))


def test_diagnose_run_conditional_matches_the_cli(cond_run, tmp_path):
    """The experiments' ``diagnose_run(conditional=True)`` gives the CLI's ``--conditional`` numbers; a model
    without classes is refused."""
    from diffloss.diagnose_output import diagnose_run

    args = ["--sigmas", "0.5,2", "--queries", "64", "--seed", "3", "--quiet", "--conditional"]
    assert (
        invoke(
            "diagnose", "--ckpt", str(cond_run), "--data", "digits", *args, "--json", str(tmp_path / "c.json")
        ).exit_code
        == 0
    )
    cli_rows = json.loads((tmp_path / "c.json").read_text())["levels"]
    d = diagnose_run(cond_run, "digits", sigmas=[0.5, 2.0], queries=64, seed=3, conditional=True)
    assert d.conditional
    np.testing.assert_allclose(d.optimal_x0, [r["optimal_x0_mse"] for r in cli_rows], rtol=1e-6)
    np.testing.assert_allclose(d.model_x0, [r["model_x0_mse"] for r in cli_rows], rtol=1e-6)


def test_diagnose_run_conditional_refuses_an_unconditional_model(uncond_run):
    from diffloss.diagnose_output import diagnose_run

    with pytest.raises(DifflossError, match="needs a class-conditional model"):
        diagnose_run(uncond_run, "digits", sigmas=[1.0], queries=8, conditional=True)


# ---- resume and old checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", [["--backbone", "mlp", "--width", "32", "--depth", "1"],
                                      ["--backbone", "unet", "--channels", "8"]], ids=["mlp", "unet"])  # fmt: skip
def test_conditional_run_resumes_bit_exactly(tmp_path, backbone):
    common = ["train", "--data", "digits", "--conditional", *backbone, "--batch", "8", "--quiet",
              "--label-dropout", "0.4", "--ckpt-every", "3", "--log-every", "1", "--warmup", "2"]  # fmt: skip
    assert invoke(*common, "--steps", "7", "--out", str(tmp_path / "straight")).exit_code == 0
    assert invoke(*common, "--steps", "4", "--out", str(tmp_path / "split")).exit_code == 0
    assert invoke(*common, "--steps", "7", "--out", str(tmp_path / "split"), "--resume").exit_code == 0
    a, b = (load_checkpoint(tmp_path / k / CHECKPOINT_FILE)[0] for k in ("straight", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("class" in k for k in a)  # the class embedding is trained and saved
    other = invoke(*common, "--label-dropout", "0.2", "--steps", "8", "--out", str(tmp_path / "split"), "--resume")
    assert "label_dropout" in one_line_error(other)


def test_checkpoints_from_before_class_conditioning_load_and_resume_as_unconditional(uncond_run):
    path = uncond_run / CHECKPOINT_FILE
    tensors, meta = load_checkpoint(path)
    for key in ("conditional", "labels", "num_classes", "label_dropout"):
        del meta["config"][key]
    del meta["model"]["num_classes"]
    save_checkpoint(path, tensors, meta)
    assert Denoiser.from_config(meta["model"]).num_classes == 0
    assert TrainConfig.from_dict(meta["config"]).conditional is False
    assert load_trained(uncond_run).num_classes == 0
    r = invoke("train", "--data", "digits", *TINY, "--steps", "3", "--out", str(uncond_run), "--resume")
    assert r.exit_code == 0, r.output


# ---- bad input -----------------------------------------------------------------------------------------------
def test_bad_train_input_is_one_line_and_writes_nothing(tmp_path):
    arr = tmp_path / "x.npy"
    np.save(arr, np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32))
    labels = tmp_path / "y.npy"
    np.save(labels, np.arange(39) % 3)
    out = tmp_path / "out"
    cases = [
        (["--data", str(arr), "--conditional"], "has no class labels"),
        (["--data", str(arr), "--labels", str(labels)], "39 labels for 40 rows"),
        ([*DIGITS_COND[:3], "--label-dropout", "1"], "--label-dropout must be in [0, 1)"),
        ([*DIGITS_COND[:3], "--label-dropout", "-0.1"], "--label-dropout must be in [0, 1)"),
        (["--data", "digits", "--label-dropout", "0.2"], "add --conditional"),
    ]
    for extra, needle in cases:
        line = one_line_error(invoke("train", *extra, *TINY, "--steps", "2", "--out", str(out)))
        assert needle in line, line
        assert not out.exists()


def test_bad_sample_and_diagnose_input_is_one_line_and_writes_nothing(cond_run, uncond_run, tmp_path):
    out = tmp_path / "s.npy"
    cases = [
        (cond_run, ["--class", "10"], "out of range"),
        (cond_run, ["--class", "-1"], "out of range"),
        (cond_run, ["--class", "3", "--guidance", "-0.5"], "--guidance must be >= 0"),
        (cond_run, ["--guidance", "2"], "add --class"),
        (cond_run, ["--class", "all", "--n", "15"], "multiple of 10"),
        (uncond_run, ["--class", "1"], "trained unconditionally"),
    ]
    for run, extra, needle in cases:
        line = one_line_error(invoke("sample", "--ckpt", str(run), *extra, "--steps", "2", "--out", str(out)))
        assert needle in line, line
        assert not out.exists() and not out.with_suffix(".png").exists()
    report, unlabelled = tmp_path / "d.json", tmp_path / "u.npy"
    np.save(unlabelled, np.zeros((20, 1, 8, 8), np.float32))
    cases = [(uncond_run, "digits", "class-conditional model"), (cond_run, str(unlabelled), "no class labels")]
    for run, data, needle in cases:
        line = one_line_error(invoke("diagnose", "--ckpt", str(run), "--data", data, "--conditional", "--json",
                                     str(report)))  # fmt: skip
        assert needle in line and not report.exists(), line


def test_image_folders_and_label_files_train_conditional_models(tmp_path):
    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs", "owls"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / name / f"{i}.png")
    arr, labels = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(arr, rng.normal(size=(12, 2)).astype(np.float32))
    np.save(labels, np.arange(12) % 4)
    for data, extra, k in [(str(folder), ["--conditional"], 3), (str(arr), ["--labels", str(labels)], 4)]:
        out = tmp_path / f"run{k}"
        r = invoke("train", "--data", data, *extra, *TINY[:-3], "--batch", "4", "--steps", "2", "--out", str(out))
        assert r.exit_code == 0, r.output
        config = json.loads((out / "config.json").read_text())
        assert config["conditional"] and config["num_classes"] == k and config["label_dropout"] == 0.1
        assert load_trained(out).num_classes == k


def test_denoiser_label_convention():
    proc = get_process("flow")
    net = Denoiser({"name": "mlp", "width": 8, "depth": 1}, (2,), proc, num_classes=3)
    x, t = torch.zeros(4, 2), torch.full((4,), 0.5)
    assert torch.equal(net(x, t), net(x, t, torch.full((4,), 3)))  # no labels = the null label K
    with pytest.raises(DifflossError, match="integers in 0 .. 3"):
        net(x, t, torch.full((4,), 4))
    plain = Denoiser({"name": "mlp", "width": 8, "depth": 1}, (2,), proc)
    with pytest.raises(DifflossError, match="unconditional"):
        plain(x, t, torch.zeros(4, dtype=torch.long))


# ---- the experiments' checkpoint evaluator ------------------------------------------------------------------------
def test_checkpoint_evaluator_samples_a_conditional_model_class_by_class(cond_run):
    """A conditional checkpoint is scored on samples whose row i is class i mod 10 (guidance 1): the same numbers as
    scoring ``sample_model`` with those labels by hand; explicit keywords (``clip``) reach the sampler."""
    from diffloss.loader import load_trained
    from diffloss.metrics.evaluate import SAMPLE_SEED, CheckpointEvaluator
    from diffloss.metrics.fid import classifier_features, fid

    evaluate = CheckpointEvaluator("digits")
    ckpt = cond_run / CHECKPOINT_FILE
    got = evaluate(ckpt, 40, "euler", 4)
    x = sample_model(load_trained(ckpt), 40, steps=4, sampler="euler", seed=SAMPLE_SEED, labels=torch.arange(40) % 10)
    want = fid(classifier_features(np.clip(x.numpy(), -1, 1), evaluate.classifier), evaluate.ref_features)
    assert got["fid"] == pytest.approx(want, rel=1e-9)
    unconditional = sample_model(load_trained(ckpt), 40, steps=4, sampler="euler", seed=SAMPLE_SEED)
    assert not torch.equal(x, unconditional)
    clipped = evaluate(ckpt, 40, "euler", 4, clip=1e-3)  # every x0 estimate clamped near 0: a different FID
    assert clipped["fid"] != pytest.approx(got["fid"], rel=1e-3)


def test_checkpoint_evaluator_scores_a_diverged_model_as_json_null(cond_run, monkeypatch):
    import diffloss.sample
    from diffloss.metrics.evaluate import CheckpointEvaluator

    monkeypatch.setattr(diffloss.sample, "sample_model", lambda model, n, **kw: torch.full((n, 1, 8, 8), torch.nan))
    got = CheckpointEvaluator("digits")(cond_run / CHECKPOINT_FILE, 8, "euler", 2)
    assert got["fid"] is None and got["kid"] is None and got["kid_std"] is None
    json.dumps(got, allow_nan=False)


def test_a_label_dropout_out_of_range_is_refused_before_any_optimal_loss_is_computed(monkeypatch):
    import diffloss.optimal.reference as reference

    monkeypatch.setattr(reference, "optimal_loss", lambda *a, **k: pytest.fail("J* computed before the check"))
    for p in (1.0, -0.1):
        with pytest.raises(DifflossError, match=r"--label-dropout must be in \[0, 1\)"):
            reference.compute_table(None, get_process("vp"), label_dropout=p)
