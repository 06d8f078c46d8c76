"""The fastntk command line."""

import json

import numpy as np
import pytest
from conftest import assert_rounding

from fastntk import cli, stax


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_kernel_builtin_matches_kernel_fn(tmp_path, capsys):
    code, out, _ = run(["kernel", "--data", "iris", "--depth", "2", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "N=150" in out
    x = cli.standardize(cli.load_data("iris")[0])
    _, _, kernel_fn = stax.fc_network(2, "relu", np.sqrt(2), 0.1, "ntk", 512)
    expected = kernel_fn(x, None, ("nngp", "ntk"))
    assert_rounding(np.load(tmp_path / "nngp.npy"), expected.nngp, "nngp.npy")  # written through a memmap
    assert_rounding(np.load(tmp_path / "ntk.npy"), expected.ntk, "ntk.npy")
    summary = json.loads((tmp_path / "kernel_summary.json").read_text())
    top = np.linalg.eigvalsh(expected.ntk)[::-1][:5]
    np.testing.assert_allclose(summary["ntk_top_eigenvalues"], top, rtol=1e-10)


@pytest.mark.parametrize("suffix", [".csv", ".npy", ".npz"])
def test_kernel_reads_files(tmp_path, capsys, suffix):
    x = np.random.default_rng(0).standard_normal((12, 3))
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        path.write_text("a,b,c\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in x))
    elif suffix == ".npy":
        np.save(path, x)
    else:
        np.savez(path, x=x)
    args = ["kernel", "--data", str(path), "--get", "ntk", "--no-standardize", "--out", str(tmp_path / "o"), "--quiet"]
    assert run(args, capsys)[0] == 0
    _, _, kernel_fn = stax.fc_network(3, "relu", np.sqrt(2), 0.1, "ntk", 512)
    assert_rounding(np.load(tmp_path / "o" / "ntk.npy"), kernel_fn(x, None, "ntk"), "ntk.npy")


def test_fc_network_is_serial():
    _, _, a = stax.fc_network(1, "erf", 1.5, 0.2, "standard", 64)
    _, _, b = stax.serial(stax.Dense(64, 1.5, 0.2, "standard"), stax.Erf(), stax.Dense(1, 1.5, 0.2, "standard"))
    x = np.random.default_rng(1).standard_normal((5, 4))
    np.testing.assert_array_equal(a(x, None, "ntk"), b(x, None, "ntk"))


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "no file"),
        ("a,b\n1,x\n2,3\n", [], "missing or non-numeric"),
        ("a,b\n1,nan\n2,3\n", [], "missing or non-numeric"),
        ("a,b\n1,2\n2,3\n", ["--activation", "rleu"], "unknown activation 'rleu'"),
        ("a,b\n1,2\n2,3\n", ["--get", "nngp,foo"], "get must be"),
    ],
)
def test_kernel_bad_input_is_one_line(tmp_path, capsys, content, extra, message):
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    code, out, err = run(["kernel", "--data", str(path), "--out", str(tmp_path / "o"), "--quiet", *extra], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not list((tmp_path / "o").glob("*.npy")) if (tmp_path / "o").exists() else True


def test_load_data_target_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("f1,f2,label\n1,2,0\n3,4,1\n")
    x, y, _ = cli.load_data(str(path), target="label")
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 1])
    with pytest.raises(cli.CLIError, match="--target: no column 'nope'"):
        cli.load_data(str(path), target="nope")


def test_fit_builtin_reports_and_plots(tmp_path, capsys):
    code, out, _ = run(["fit", "--data", "iris", "--depth", "1", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "RBF kernel ridge" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["task"] == "classification"
    assert report["n_train"] + report["n_test"] == 150
    assert report["test"]["accuracy"] > 0.85
    assert {"test_nngp", "test_rbf_kernel_ridge", "spectrum", "gcv"} <= set(report)
    for name in ("spectrum.png", "loss.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pred = np.loadtxt(tmp_path / "predictions.csv", delimiter=",", skiprows=1)
    assert pred.shape == (report["n_test"], 2)
    assert np.mean(pred[:, 0] == pred[:, 1]) == pytest.approx(report["test"]["accuracy"])


def test_fit_regression_at_finite_time(tmp_path, capsys):
    args = ["fit", "--data", "diabetes", "--depth", "2", "--t", "100", "--diag-reg", "1e-3", "--out", str(tmp_path),
            "--quiet"]
    assert run(args, capsys)[0] == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["task"] == "regression"
    assert report["t"] == 100
    assert np.isfinite(report["test"]["mse"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "iris", "--test-size", "0.995"], "leaves"),
        (["--data", "iris", "--test-size", "0"], "--test-size must be"),
        (["--data", "{csv}", "--target", "nope"], "--target: no column 'nope'"),
        (["--data", "{csv}"], "needs a target column"),
        (["--data", "missing.csv", "--target", "y"], "no file"),
    ],
)
def test_fit_bad_input_is_one_line(tmp_path, capsys, args, message):
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(20)))
    args = [a.replace("{csv}", str(path)) for a in args]
    code, _, err = run(["fit", *args, "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_fit_default_is_the_readme_job(tmp_path, capsys, monkeypatch):
    """`fastntk fit` with defaults: digits, 3 hidden ReLU layers, GCV (its tiny ridge gives a
    tightly clustered spectrum, where LAPACK's MRRR eigensolver can fail: solvers falls back)."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(["fit", "--quiet"], capsys)
    assert code == 0, out
    report = json.loads((tmp_path / "fastntk-fit" / "report.json").read_text())
    assert report["data"] == "digits"
    assert report["test"]["accuracy"] > 0.97
