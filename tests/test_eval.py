"""FID/KID in the classifiers' feature spaces on real MNIST and digits, and the `diffloss eval` command."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffloss.cli import cli as diffloss_cli
from diffloss.data import load_mnist
from diffloss.metrics.fid import classifier_features, fid, kid

NOISE = (0.05, 0.1, 0.2, 0.5)


@pytest.fixture(scope="module")
def test_split():
    return load_mnist("test").x


@pytest.fixture(scope="module")
def halves(test_split):
    perm = np.random.default_rng(0).permutation(len(test_split))
    a, b = test_split[perm[:5000]], test_split[perm[5000:]]
    return a, b, classifier_features(a), classifier_features(b)


def noisy(x, level, seed=1):
    return x + level * np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)


@pytest.fixture(scope="module")
def noisy_features(halves):
    """Features of the first half with Gaussian noise of each std in NOISE added (images in [-1, 1])."""
    return {s: classifier_features(noisy(halves[0], s)) for s in NOISE}


def test_fid_of_disjoint_halves_is_small_and_grows_with_noise(halves, noisy_features):
    _, _, fa, fb = halves
    real = fid(fa, fb)
    by_noise = [fid(noisy_features[s], fb) for s in NOISE]
    assert all(x < y for x, y in zip(by_noise, by_noise[1:])), by_noise
    assert real < 0.02 * by_noise[-1] and real < by_noise[0]


def test_kid_of_disjoint_halves_is_zero_within_its_spread(halves, noisy_features):
    _, _, fa, fb = halves
    same = kid(fa, fb, subset_size=500, subsets=20)
    assert abs(same.mean) < 2 * same.std
    far = kid(noisy_features[0.5], fb, subset_size=500, subsets=20)
    assert far.mean > 5 * far.std


def invoke(*args):
    return CliRunner().invoke(diffloss_cli, list(args))


def test_eval_mnist_json(tmp_path, test_split):
    path, ref = tmp_path / "s.npy", tmp_path / "ref.npy"
    np.save(path, noisy(test_split[:500], 0.3).reshape(500, 1, 28, 28))
    np.save(ref, test_split[5000:7000])  # (N, 784) rows work as well as images
    out = tmp_path / "e.json"
    args = ["--max-points", "200", "--kid-subset", "300", "--json", str(out)]
    r = invoke("eval", "--samples", str(path), "--ref", str(ref), *args)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["n_samples"] == 500 and res["n_ref"] == 2000 and res["dim"] == 784
    assert "classifier" in res["feature_space"]
    m = res["metrics"]
    assert set(m) == {"fid", "kid", "sinkhorn", "mmd"}
    assert m["fid"]["value"] > 0 and m["kid"]["subset_size"] == 300 and m["sinkhorn"]["n_points"] == [200, 200]
    assert m["kid"]["value"] > 3 * m["kid"]["std"] and m["sinkhorn"]["value"] > 0 and m["mmd"]["value"] > 0


def test_eval_toy_data_sinkhorn_and_mmd(tmp_path):
    rng = np.random.default_rng(0)
    same, shifted = rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) + 1.0
    ref = tmp_path / "ref.npy"
    np.save(ref, rng.normal(size=(400, 2)))
    results = []
    for name, x in (("same", same), ("shifted", shifted)):
        np.save(tmp_path / f"{name}.npy", x)
        out = tmp_path / f"{name}.json"
        r = invoke("eval", "--samples", str(tmp_path / f"{name}.npy"), "--ref", str(ref), "--json", str(out))
        assert r.exit_code == 0, r.output
        results.append(json.loads(out.read_text()))
    a, b = results
    assert set(a["metrics"]) == {"sinkhorn", "mmd"} and a["feature_space"].startswith("data coordinates")
    # a unit mean shift in 2-d: the Sinkhorn divergence is close to W_2^2 = 2 (small eps)
    assert b["metrics"]["sinkhorn"]["value"] == pytest.approx(2.0, abs=0.4)
    assert a["metrics"]["sinkhorn"]["value"] < 0.2 and b["metrics"]["mmd"]["value"] > 5 * a["metrics"]["mmd"]["value"]


def test_digits_fid_of_halves_is_small_and_grows_with_noise():
    from diffloss.data import load_dataset

    x = load_dataset("digits").x
    perm = np.random.default_rng(0).permutation(len(x))
    a, fb = x[perm[:898]], classifier_features(x[perm[898:]], "digits")
    by_noise = [fid(classifier_features(noisy(a, s), "digits"), fb) for s in (0.0, 0.5, 1.0)]
    assert by_noise[0] < 0.2 * by_noise[1] < 0.2 * by_noise[2], by_noise


def test_class_accuracy_of_real_digits_against_their_labels_and_against_shuffled_labels(tmp_path):
    """Real digits scored against their true labels are classified as intended (the classifier's held-out accuracy
    is 99.2%); against labels shifted by one class almost none are."""
    from diffloss.data import load_dataset

    ds = load_dataset("digits")
    path, out = tmp_path / "d.npy", tmp_path / "d.json"
    np.save(path, ds.x[:400])
    for labels, low, high in ((ds.labels[:400], 0.97, 1.0), ((ds.labels[:400] + 1) % 10, 0.0, 0.03)):
        np.save(tmp_path / "l.npy", labels)
        r = invoke("eval", "--samples", str(path), "--ref", "digits", "--metrics", "fid", "--labels",
                   str(tmp_path / "l.npy"), "--json", str(out))  # fmt: skip
        assert r.exit_code == 0, r.output
        acc = json.loads(out.read_text())["metrics"]["class_accuracy"]
        assert low <= acc["value"] <= high and set(acc["per_class"]) == {str(c) for c in range(10)}
        assert acc["min_per_class"] == min(v["value"] for v in acc["per_class"].values())
    np.save(tmp_path / "l3.npy", np.zeros(3, dtype=np.int64))
    r = invoke("eval", "--samples", str(path), "--ref", "digits", "--labels", str(tmp_path / "l3.npy"), "--json",
               str(out))  # fmt: skip
    assert r.exit_code != 0 and "3 labels for 400 samples" in r.output


def test_eval_digits_uses_the_digits_classifier(tmp_path):
    from diffloss.data import load_dataset

    path, out = tmp_path / "d.npy", tmp_path / "d.json"
    np.save(path, load_dataset("digits").x[:300])
    r = invoke("eval", "--samples", str(path), "--ref", "digits", "--max-points", "200", "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["feature_space"].startswith("digits classifier") and res["n_ref"] == 1797
    assert set(res["metrics"]) == {"fid", "kid", "sinkhorn", "mmd"} and res["metrics"]["mmd"]["n_points"] == [200, 200]


def test_eval_mnist14_uses_the_mnist14_classifier(tmp_path):
    from diffloss.data import load_dataset
    from diffloss.metrics.classifier import get_spec, sha256_file

    path, out = tmp_path / "s.npy", tmp_path / "s.json"
    np.save(path, load_mnist("valid", 14).images()[:500])
    r = invoke("eval", "--samples", str(path), "--ref", "mnist14:test", "--metrics", "fid,kid", "--json", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    sha = sha256_file(get_spec("mnist14").asset)
    assert res["feature_space"].startswith("mnist14 classifier") and sha in res["feature_space"]
    assert res["dim"] == 196 and res["n_ref"] == 10_000 and 0 < res["metrics"]["fid"]["value"] < 10
    ref = load_dataset("mnist14:test")
    fx = classifier_features(load_mnist("valid", 14).x[:500], "mnist14")
    assert res["metrics"]["fid"]["value"] == pytest.approx(fid(fx, classifier_features(ref.x, "mnist14")))


def _save(tmp_path, name, arr):
    np.save(tmp_path / name, arr)
    return str(tmp_path / name)


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda p: str(p / "missing.npy"), ["--ref", "mnist:test"], "does not exist"),
        (lambda p: _save(p, "w.npy", np.zeros((10, 1, 27, 27), np.float32)), ["--ref", "mnist:test"], "D = 729"),
        (lambda p: _save(p, "n.npy", np.full((10, 784), np.nan, np.float32)), ["--ref", "mnist:test"], "NaN"),
        (lambda p: _save(p, "f.npy", np.zeros((10, 784), np.float32)), ["--ref", "mnist14:nope"], "unknown dataset"),
        (lambda p: _save(p, "g.npy", np.zeros((10, 784), np.float32)), ["--ref", "mnist14:test"], "D = 196"),
        (
            lambda p: _save(p, "t.npy", np.zeros((10, 2), np.float32)),
            ["--ref", "gmm", "--metrics", "fid"],
            "classifier",
        ),
        (lambda p: _save(p, "u.npy", np.zeros((10, 2), np.float32)), ["--ref", "gmm", "--metrics", "fd"], "metric"),
        (lambda p: _save(p, "e.npy", np.zeros((10, 2), np.float32)), ["--ref", "gmm", "--epsilon", "-1"], "epsilon"),
    ],
)
def test_eval_bad_input_one_line_nonzero_exit_no_output(tmp_path, make, extra, message):
    out = tmp_path / "o.json"
    r = invoke("eval", "--samples", make(tmp_path), *extra, "--json", str(out))
    assert r.exit_code != 0 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


def test_eval_help_is_a_manual():
    r = invoke("eval", "--help")
    assert r.exit_code == 0 and "Example:" in r.output and "Sinkhorn" in r.output


def test_eval_notices_images_in_0_1(tmp_path, test_split):
    np.save(tmp_path / "s.npy", (test_split[:50] + 1) / 2)
    np.save(tmp_path / "r.npy", test_split[:100])
    out = tmp_path / "o.json"
    args = ["--samples", str(tmp_path / "s.npy"), "--ref", str(tmp_path / "r.npy"), "--metrics", "fid"]
    r = invoke("eval", *args, "--json", str(out))
    assert r.exit_code == 0 and "map [0, 1] by 2x - 1" in r.output and out.exists()
