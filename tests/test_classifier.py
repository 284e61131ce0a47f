"""The committed feature classifiers (MNIST at 28x28 and 14x14, digits): accuracy, provenance record, input
convention, which data each one serves."""

import json

import numpy as np
import pytest

from diffloss.data import load_mnist
from diffloss.errors import DifflossError
from diffloss.metrics.classifier import (
    CLASSIFIERS,
    FEATURE_DIM,
    accuracy,
    apply,
    classifier_for,
    digits_splits,
    get_spec,
    load_classifier,
    sha256_file,
)


def record(name):
    return json.loads(get_spec(name).asset.with_suffix(".json").read_text())


def test_mnist_accuracy_on_a_slice_of_mnist_test():
    te = load_mnist("test").subset(slice(0, 3000))
    assert accuracy(load_classifier("mnist"), te.x, te.labels) >= 0.985


def test_mnist14_accuracy_on_a_slice_of_mnist14_test():
    te = load_mnist("test", 14).subset(slice(0, 3000))
    assert accuracy(load_classifier("mnist14"), te.x, te.labels) >= 0.985
    assert record("mnist14")["train_data"] == "mnist14:train (50000 images)"


@pytest.mark.parametrize(
    "shape, name",
    [((1, 28, 28), "mnist"), ((784,), "mnist"), ((1, 14, 14), "mnist14"), ((196,), "mnist14"),
     ((1, 8, 8), "digits"), ((64,), None), ((2,), None), ((3, 14, 14), None)],
)  # fmt: skip
def test_classifier_for_a_data_shape(shape, name):
    assert classifier_for(shape) == name


def test_digits_accuracy_on_held_out_digits():
    tr, te = digits_splits()
    assert te.n == 360 and tr.n == 1437
    assert accuracy(load_classifier("digits"), te.x, te.labels) >= 0.98


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_record_matches_committed_weights(name):
    rec = record(name)
    assert rec["sha256"] == sha256_file(get_spec(name).asset)
    assert rec["test_accuracy"] >= 0.99 and f"python -m diffloss.metrics.classifier --data {name}" in rec["command"]
    assert get_spec(name).asset.stat().st_size < 2_000_000


def test_features_shape_and_flat_input_agree():
    x = load_mnist("test").x[:16]
    model = load_classifier("mnist")
    f = apply(model, x)
    assert f.shape == (16, FEATURE_DIM) and (f >= 0).all()
    np.testing.assert_array_equal(f, apply(model, x.reshape(16, 1, 28, 28)))
    with pytest.raises(DifflossError, match="28, 28"):
        apply(model, np.zeros((4, 64), np.float32))
    with pytest.raises(DifflossError, match="unknown classifier"):
        load_classifier("cifar")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_retraining_reproduces_the_committed_weights(tmp_path, name):
    # the recorded command, run again, gives the same bytes
    from click.testing import CliRunner

    from diffloss.metrics.classifier import main

    rec = record(name)
    args = ["--data", name, "--out", str(tmp_path), "--epochs", str(rec["epochs"]), "--seed", str(rec["seed"])]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert sha256_file(tmp_path / get_spec(name).asset.name) == rec["sha256"]
