"""The committed MNIST feature classifier: accuracy, provenance record, input convention."""

import json

import numpy as np
import pytest

from diffloss.data import load_mnist
from diffloss.errors import DifflossError
from diffloss.metrics.classifier import FEATURE_DIM, accuracy, apply, asset_path, load_classifier, sha256_file


def test_accuracy_on_a_slice_of_mnist_test():
    te = load_mnist("test").subset(slice(0, 3000))
    assert accuracy(load_classifier(), te.x, te.labels) >= 0.985


def test_record_matches_committed_weights():
    rec = json.loads(asset_path().with_suffix(".json").read_text())
    assert rec["sha256"] == sha256_file(asset_path())
    assert rec["test_accuracy"] >= 0.99 and "python -m diffloss.metrics.classifier" in rec["command"]
    assert asset_path().stat().st_size < 2_000_000


def test_features_shape_and_flat_input_agree():
    x = load_mnist("test").x[:16]
    model = load_classifier()
    f = apply(model, x)
    assert f.shape == (16, FEATURE_DIM) and (f >= 0).all()
    np.testing.assert_array_equal(f, apply(model, x.reshape(16, 1, 28, 28)))
    with pytest.raises(DifflossError, match="28, 28"):
        apply(model, np.zeros((4, 64), np.float32))


@pytest.mark.slow
def test_retraining_reproduces_the_committed_weights(tmp_path):
    # the recorded command, run again, gives the same bytes
    from click.testing import CliRunner

    from diffloss.metrics.classifier import main

    rec = json.loads(asset_path().with_suffix(".json").read_text())
    r = CliRunner().invoke(main, ["--out", str(tmp_path), "--epochs", str(rec["epochs"]), "--seed", str(rec["seed"])])
    assert r.exit_code == 0, r.output
    assert sha256_file(tmp_path / "mnist_classifier.safetensors") == rec["sha256"]
