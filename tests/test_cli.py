"""The fastntk command line."""

import json

import numpy as np
import pytest
from conftest import assert_rounding, child_process

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
    _, _, b = stax.serial(stax.Dense(64, 1.5, 0.2, parameterization="standard"), stax.Erf(), stax.Dense(1, 1.5, 0.2, parameterization="standard"))
    x = np.random.default_rng(1).standard_normal((5, 4))
    np.testing.assert_array_equal(a(x, None, "ntk"), b(x, None, "ntk"))


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "no file"),
        ("a,b\n1,x\n2,3\n", [], "row 2, column 'b': 'x' is not a number"),
        ("a,b\n1,nan\n2,3\n", [], "row 2, column 'b': missing value ('nan')"),
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


def test_fit_cnn_reports_the_fully_connected_kernel_beside_it(tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "small.npz"
    np.savez(path, x=digits.data[:100], y=digits.target[:100])
    code, out, _ = run(["fit", "--data", str(path), "--target", "y", "--arch", "cnn", "--image-shape", "8,8", "--depth",
                        "1", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 0
    assert "CNN (gap readout)" in out and "fully-connected NTK" in out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["network"]["arch"] == "cnn" and report["network"]["image_shape"] == [8, 8, 1]
    assert report["test"]["accuracy"] > 0.8
    assert {"test_fc_ntk", "test_nngp", "test_rbf_kernel_ridge"} <= set(report)
    for args, message in ((["--image-shape", "8,7"], "H*W*C = 64"), ([], "needs --image-shape"),
                          (["--image-shape", "8,8", "--solver", "cg"], "--arch cnn fits with the exact solver")):
        code, _, err = run(["fit", "--data", str(path), "--target", "y", "--arch", "cnn", *args, "--out",
                            str(tmp_path / "o"), "--quiet"], capsys)
        assert code == 2 and message in err


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


def _csv(path, text):
    path.write_text(text)
    return str(path)


def _rows(n=20, label=lambda i: i % 2):
    return "\n".join(f"{i},{(i * 7) % 5},{label(i)}" for i in range(n))


@pytest.mark.parametrize(
    ("content", "target", "message"),
    [
        ("", "y", "{path} is empty"),
        ("\n\n", "y", "{path} is empty"),
        ("a,b,y\n", "y", "{path} has a header (a,b,y) but no data rows"),
        ("a,b,y\n1,2,0\n3,4,\n" + _rows(), "y", "--target y: {path} row 3, column 'y': missing value (empty cell)"),
        ("a,b,y\n1,2,0\n3,4,NaN\n" + _rows(), "y", "--target y: {path} row 3, column 'y': missing value ('NaN')"),
        ("a,b,y\n1,2,0\n3,inf,1\n" + _rows(), "y", "--data: {path} row 3, column 'b': 'inf' is not finite"),
        ("a,b,y\n1,2,0\n3,nan,1\n" + _rows(), "y", "--data: {path} row 3, column 'b': missing value ('nan')"),
        ("a,b,y\n1,2,0\n3,,1\n" + _rows(), "y", "--data: {path} row 3, column 'b': missing value (empty cell)"),
        ("a,b,y\n1,2,cat\n3,4,dog\nabc,5,cat\n" + _rows(), "y",
         "--data: {path} row 4, column 'a': 'abc' is not a number"),
        ("a,b,y\n1,2,0\n3,4,1\n5,6,1,9\n" + _rows(), "y", "--data: {path} row 4 has 4 values; the header has 3"),
        ("1,2,0\n3,,1\n" + _rows(), "2",
         "--data: {path} row 2, column 2: missing value (empty cell) (rows and columns count from 1)"),
        ("1,2,0\n3,4\n" + _rows(), "2", "--data: {path} row 2 has 2 values; row 1 has 3"),
        ("a,b,y\n" + _rows(), "7",
         "--target: no column '7' in {path}; it has 3 columns ('a', 'b', 'y'); an index is 0..2 (or -3..-1)"),
        ("a,b,y\n" + _rows(), "-4", "--target: no column '-4'"),
        ("a,b,y\n" + _rows(), "label", "--target: no column 'label' in {path}"),
        ("y\n" + "\n".join(map(str, range(9))), "y", "--data: {path} has no feature columns besides --target y"),
        ("a;b;y\n1;2;0\n", "y", "--data: {path} seems to separate values by ';'; fastntk reads comma-separated"),
    ],
)
def test_fit_bad_csv_names_row_and_column(tmp_path, capsys, content, target, message):
    path = _csv(tmp_path / "d.csv", content)
    code, _, err = run(["fit", "--data", path, "--target", target, "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert message.format(path=path) in err
    assert len(err.strip().splitlines()) == 1
    assert "y_train" not in err
    assert not (tmp_path / "o").exists()


def test_fit_regression_on_text_labels_is_refused(tmp_path, capsys):
    path = _csv(tmp_path / "d.csv", "a,b,y\n" + _rows(label=lambda i: "cat" if i % 2 else "dog"))
    code, _, err = run(["fit", "--data", path, "--target", "y", "--task", "regression", "--out", str(tmp_path),
                        "--quiet"], capsys)
    assert code == 2
    assert "--task regression needs numbers in --target y; it holds text such as 'dog'" in err


def _bad_array_file(tmp_path, kind):
    x = np.random.default_rng(0).standard_normal((12, 3))
    path = tmp_path / ("d.npz" if kind.startswith("npz") else "d.npy")
    if kind == "object":
        np.save(path, np.array([[1, "a"], [2, None]], dtype=object), allow_pickle=True)
    elif kind == "text":
        np.save(path, np.array([["1", "2"], ["3", "4"]]))
    elif kind in ("1-D", "3-D", "empty"):
        np.save(path, {"1-D": x[:, 0], "3-D": x.reshape(12, 3, 1), "empty": x[:0]}[kind])
    elif kind in ("nan", "target nan"):
        x[4, 1 if kind == "nan" else 2] = np.nan
        np.save(path, x)
    elif kind == "npz keys":
        np.savez(path, a=x, b=x)
    elif kind == "npz target length":
        np.savez(path, x=x, y=np.arange(11))
    elif kind == "npz target nan":
        np.savez(path, x=x, y=np.r_[np.zeros(11), np.nan])
    elif kind == "npz target missing":
        np.savez(path, x=x, y=np.array(["cat"] * 11 + [""]))
    elif kind == "npz object":
        np.savez(path, x=x.astype(object))
    elif kind == "npz no target":
        np.savez(path, x=x)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "target", "message"),
    [
        ("object", None, "--data: {path} holds an object array (Python objects)"),
        ("text", None, "--data: {path} holds <U1 values; expected numbers"),
        ("1-D", None, "has shape (12,); for one feature save x.reshape(-1, 1)"),
        ("3-D", None, "has shape (12, 3, 1); flatten each point first"),
        ("empty", None, "expected a non-empty 2-D array (N, d); {path} has shape (0, 3)"),
        ("nan", None, "--data: {path} has nan at [4, 1] (0-based index)"),
        ("target nan", "2", "--target 2: {path} has nan at [4, 2] (0-based index)"),
        ("nan", "5", "--target: no column '5' in {path}; it has 3 columns (no header); an index is 0..2"),
        ("npz keys", "y", "--target: {path} has no array 'y'; it has ['a', 'b']"),
        ("npz keys", None, "--data: {path} has no feature array named 'x', 'X' or 'data'"),
        ("npz target length", "y", "--target y: {path}['y'] has shape (11,); expected (12,)"),
        ("npz target nan", "y", "--target y: {path}['y'][11] (0-based index) is nan"),
        ("npz target missing", "y", "--target y: {path}['y'][11] (0-based index) is missing ('')"),
        ("npz object", None, "--data: {path} holds an object array"),
        ("npz no target", "x", "--data: {path} has no feature array named 'x', 'X' or 'data'"),
    ],
)
def test_bad_arrays_are_one_line(tmp_path, capsys, kind, target, message):
    path = _bad_array_file(tmp_path, kind)
    command = ["kernel"] if target is None else ["fit", "--target", target]
    code, _, err = run([*command, "--data", path, "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert message.format(path=path) in err
    assert len(err.strip().splitlines()) == 1


def test_npz_single_array_and_target(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 2))
    np.savez(tmp_path / "a.npz", x)  # saved as arr_0
    np.testing.assert_array_equal(cli.load_data(str(tmp_path / "a.npz"))[0], x)
    np.savez(tmp_path / "b.npz", features=x, label=np.array(list("abcabc")))
    got, y, _ = cli.load_data(str(tmp_path / "b.npz"), target="label")
    np.testing.assert_array_equal(got, x)
    assert y.tolist() == list("abcabc")


@pytest.mark.parametrize(
    ("text", "columns", "y"),
    [
        ("0,1,y\n0.5,2,1\n1.5,3,0\n", 2, [1, 0]),  # numeric column names: still a header
        ("1,2,cat\n3,4,dog\n", 3, ["cat", "dog"]),  # text labels in the first row: no header
        ('\ufeff"a","b","y"\n1,2,0\n\n3,4,1\n\n', 2, [0, 1]),  # byte-order mark, quotes, blank lines
    ],
)
def test_load_data_header_detection(tmp_path, text, columns, y):
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8")
    x, got, _ = cli.load_data(str(path), target="y" if columns == 2 and "y" in text else "2")
    assert got.tolist() == y
    assert x.shape == (2, 2)


def test_fit_text_labels_match_numeric_labels(tmp_path, capsys):
    """String classes are classes: the fit equals the one with 0/1 labels, reported by name."""
    names = {0: "cat", 1: "dog"}  # the same order as 0, 1: the same stratified split
    label = lambda i: int((i * 7) % 5 > 1)  # noqa: E731
    results = {}
    for kind, lab in (("num", label), ("text", lambda i: names[label(i)])):
        rows = "\n".join(f"{i},{(i * 7) % 5},{lab(i)}" for i in range(30))
        path = _csv(tmp_path / f"{kind}.csv", "a,b,y\n" + rows)
        out = tmp_path / kind
        args = ["fit", "--data", path, "--target", "y", "--depth", "1", "--out", str(out), "--quiet"]
        assert run(args, capsys)[0] == 0
        report = json.loads((out / "report.json").read_text())
        rows = (out / "predictions.csv").read_text().splitlines()
        results[kind] = report, [r.split(",") for r in rows[1:]]
    (num, num_rows), (text, text_rows) = results["num"], results["text"]
    assert text["task"] == "classification" and text["classes"] == ["cat", "dog"]
    assert text["test"] == num["test"] and text["test_rbf_kernel_ridge"] == num["test_rbf_kernel_ridge"]
    assert text_rows == [[names[int(float(v))] for v in row] for row in num_rows]


def test_standardize_is_scale_free_and_constant_columns_are_zero():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.standard_normal((50, 3)), np.full(50, 0.1)])
    z = cli.standardize(x)
    np.testing.assert_array_equal(z[:, 3], 0.0)  # std(0.1, ..., 0.1) is 1.4e-17, not 0
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1.0, rtol=1e-12)
    for factor in (1e200, 1e-300, 2.0**600):
        np.testing.assert_allclose(cli.standardize(x * factor), z, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cli.standardize(x * 2.0**600), z)  # a power of 2: exactly
    np.testing.assert_array_equal(cli.standardize(np.zeros((4, 2))), 0.0)


def test_fit_on_huge_features_matches_scaled_data(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    reports = []
    for scale in (1e200, 1.0):
        path = tmp_path / f"s{scale:g}.csv"
        path.write_text("a,b,c,y\n" + "\n".join(",".join(map(repr, [*(r * scale).tolist(), t]))
                                               for r, t in zip(x, y.tolist())))
        out = tmp_path / f"o{scale:g}"
        assert run(["fit", "--data", str(path), "--target", "y", "--depth", "1", "--out", str(out), "--quiet"],
                   capsys)[0] == 0
        reports.append(json.loads((out / "report.json").read_text()))
        reports[-1]["predictions"] = (out / "predictions.csv").read_text()
    big, small = reports
    assert big["test"]["accuracy"] > 0.8
    for key in ("test", "test_nngp", "test_rbf_kernel_ridge", "predictions"):
        assert big[key] == small[key]
    assert big["diag_reg"] == pytest.approx(small["diag_reg"], rel=1e-9)


def test_kernel_on_huge_features_matches_scaled_data(tmp_path, capsys):
    x = np.random.default_rng(2).standard_normal((15, 4))
    kernels = []
    for scale in (1e200, 1e-200):
        np.save(tmp_path / "x.npy", x * scale)
        out = tmp_path / f"o{scale:g}"
        assert run(["kernel", "--data", str(tmp_path / "x.npy"), "--get", "ntk", "--out", str(out), "--quiet"],
                   capsys)[0] == 0
        kernels.append(np.load(out / "ntk.npy"))
    assert np.isfinite(kernels[0]).all()
    np.testing.assert_allclose(kernels[0], kernels[1], rtol=1e-12)


def test_report_is_strict_json_when_r2_is_undefined(tmp_path, capsys):
    path = _csv(tmp_path / "c.csv", "a,b,y\n" + "\n".join(f"{i},{i % 3},{0.5}" for i in range(20)))
    args = ["fit", "--data", path, "--target", "y", "--task", "regression", "--depth", "1", "--diag-reg", "1e-3",
            "--out", str(tmp_path / "o"), "--quiet"]
    assert run(args, capsys)[0] == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text(), parse_constant=pytest.fail)
    assert report["test"]["r2"] is None


def test_json_guard_names_the_non_finite_entry():
    with pytest.raises(cli.CLIError, match=r"non-finite test\.mse \(nan\), spectrum\[1\] \(inf\); nothing written"):
        cli._json_text({"test": {"mse": float("nan"), "r2": 0.5}, "spectrum": [1.0, float("inf")]})


def test_parquet_bad_cell_names_row_and_column(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    pd.DataFrame({"a": [1.0, 2.0, None], "y": ["cat", "dog", "cat"]}).to_parquet(path)
    code, _, err = run(["fit", "--data", str(path), "--target", "y", "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert f"--data: {path} row 3, column 'a': missing value (empty cell) (data rows count from 1)" in err
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": ["cat", "dog", "cat"]}).to_parquet(path)
    x, y, _ = cli.load_data(str(path), "y")
    np.testing.assert_array_equal(x, [[1.0], [2.0], [3.0]])
    assert y.tolist() == ["cat", "dog", "cat"]


# --- fastntk kernel: streamed to disk, resumable ------------------------------------------------


def _kernel_args(data, out, *extra):
    return ["kernel", "--data", str(data), "--out", str(out), "--quiet", "--block-size", "16", *extra]


def test_kernel_resumes_after_an_interruption(tmp_path, capsys, monkeypatch):
    """Ctrl-C after 5 blocks, then the same command: only the missing blocks are computed and
    the files hold the bits of an uninterrupted run."""
    from fastntk.solvers._operator import KernelOperator

    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((70, 4)))
    assert run(_kernel_args(tmp_path / "x.npy", tmp_path / "whole"), capsys)[0] == 0
    block, calls = KernelOperator.block, []

    def interrupted(self, *args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C
        calls.append(1)
        return block(self, *args, **kwargs)

    monkeypatch.setattr(KernelOperator, "block", interrupted)
    code, _, err = run(_kernel_args(tmp_path / "x.npy", tmp_path / "part"), capsys)
    assert code == 2
    assert "interrupted; the finished blocks are kept in" in err
    assert "run the same command again to resume" in err
    monkeypatch.undo()
    code, out, _ = run(_kernel_args(tmp_path / "x.npy", tmp_path / "part"), capsys)
    assert code == 0
    assert "resumed: 5 of 15 blocks were already done, 10 computed now" in out
    for name in ("nngp", "ntk"):
        np.testing.assert_array_equal(np.load(tmp_path / "part" / f"{name}.npy"),
                                      np.load(tmp_path / "whole" / f"{name}.npy"))
    summary = json.loads((tmp_path / "part" / "kernel_summary.json").read_text())
    assert (summary["blocks"], summary["blocks_computed"]) == (15, 10)


def test_kernel_refuses_other_data_or_network_until_restart(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((30, 4)))
    args = _kernel_args(tmp_path / "x.npy", tmp_path / "o")
    assert run(args, capsys)[0] == 0
    code, out, _ = run(args, capsys)
    assert code == 0
    assert "all 3 blocks were already done: nothing computed" in out
    for extra, message in ((["--depth", "4"], "network: another network spec"), (["--get", "ntk"], "get: stored")):
        code, _, err = run([*args, *extra], capsys)
        assert code == 2
        assert message in err
        assert "--restart" in err
        assert len(err.strip().splitlines()) == 1
    np.save(tmp_path / "x.npy", rng.standard_normal((30, 4)))
    code, _, err = run(args, capsys)
    assert code == 2
    assert "x1: stored shape (30, 4) float64 sha256" in err
    assert run([*args, "--restart"], capsys)[0] == 0


@pytest.mark.slow
def test_kernel_killed_then_rerun_gives_the_bits_of_one_run(tmp_path, capsys):
    """SIGKILL a `fastntk kernel` process once its manifest records a few of its 741 blocks (16x16 blocks
    of N = 600), rerun the command: the files equal an uninterrupted run's, bit for bit."""
    import signal
    import subprocess
    import sys
    import time


    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((600, 3)))
    args = _kernel_args(tmp_path / "x.npy", tmp_path / "part", "--get", "ntk")
    proc = subprocess.Popen([sys.executable, "-m", "fastntk.cli", *args], **child_process(OMP_NUM_THREADS="1"))
    manifest = tmp_path / "part" / "kernel_manifest.json"
    finished = 0
    try:
        deadline = time.monotonic() + 60
        while finished < 5 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
            if manifest.exists():
                finished = sum(b - a for a, b in json.loads(manifest.read_text())["finished"])
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = sum(b - a for a, b in json.loads(manifest.read_text())["finished"])
    assert 5 <= done < 741
    code, out, _ = run(args, capsys)
    assert code == 0
    assert f"resumed: {done} of 741 blocks were already done, {741 - done} computed now" in out
    assert run(_kernel_args(tmp_path / "x.npy", tmp_path / "whole", "--get", "ntk"), capsys)[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "part" / "ntk.npy"), np.load(tmp_path / "whole" / "ntk.npy"))


def test_fit_falkon_reports_iterations_and_plots_convergence(tmp_path, capsys):
    code, out, _ = run(["fit", "--data", "digits", "--solver", "falkon", "--centers", "300", "--diag-reg", "1e-3",
                        "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "solver: falkon (--solver falkon)" in out and "300 centres" in out
    report = json.loads((tmp_path / "report.json").read_text())
    info = report["solver"]
    assert info["name"] == "falkon" and info["centers"] == 300 and info["validation_rows"] == 144
    assert len(info["residuals"]) == len(info["validation_mse"]) == info["iterations"] + 1
    assert info["validation_mse"][info["best_iteration"]] == min(info["validation_mse"])
    assert report["test"]["accuracy"] > 0.95
    assert (tmp_path / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "spectrum.png").exists()


def test_fit_features_is_ridge_on_random_features_and_plots_their_spectrum(tmp_path, capsys):
    code, out, _ = run(["fit", "--data", "digits", "--solver", "features", "--features", "2048", "--diag-reg", "1e-3",
                        "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "solver: features (--solver features)" in out and "2048 random features" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["solver"]["name"] == "features" and report["solver"]["features"] == 2048
    # one draw of 2048 features: accuracy 0.936–0.964 over map seeds 0–4 (exact NTK: 0.989)
    assert report["test"]["accuracy"] > 0.92
    assert (tmp_path / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "convergence.png").exists()


def test_fit_cg_with_gcv_on_a_subset(tmp_path, capsys):
    code, out, _ = run(["fit", "--data", "diabetes", "--solver", "cg", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["solver"]["name"] == "cg" and report["solver"]["converged"]
    assert report["gcv"]["n_points"] == report["n_train"] == 353
    exact = run(["fit", "--data", "diabetes", "--solver", "exact", "--out", str(tmp_path / "e"), "--quiet"], capsys)
    assert exact[0] == 0
    report_exact = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["diag_reg"] == pytest.approx(report_exact["diag_reg"], rel=1e-12)
    assert report["test"]["mse"] == pytest.approx(report_exact["test"]["mse"], rel=1e-6)


def test_fit_falkon_at_finite_time_uses_nystrom_dynamics(tmp_path, capsys):
    code, _, _ = run(["fit", "--data", "diabetes", "--solver", "falkon", "--centers", "100", "--t", "100",
                      "--diag-reg", "1e-3", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["solver"]["dynamics"]["centers"] == 100
    assert report["test"]["mse"] != report["test_t_infinity"]["mse"]


def test_fit_auto_picks_falkon_above_its_threshold(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "AUTO_EXACT_MAX_N", 100)
    code, out, _ = run(["fit", "--data", "iris", "--centers", "50", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "solver: falkon (auto: N=120 training points > 100)" in out
    assert json.loads((tmp_path / "report.json").read_text())["solver"]["choice"].startswith("auto: N=120")


def test_fit_auto_picks_falkon_when_the_exact_arrays_do_not_fit(tmp_path, capsys, monkeypatch):
    from fastntk import _validation

    monkeypatch.setattr(_validation, "available_memory", lambda: 3 * 10**5)  # < 6 × 120² × 8 bytes
    code, out, _ = run(["fit", "--data", "iris", "--centers", "50", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0
    assert "solver: falkon (auto: the exact solver's 6 N×N float64 arrays need 0.000644 GiB, 0.000279 GiB available)" in out
    monkeypatch.undo()
    code, out, _ = run(["fit", "--data", "iris", "--out", str(tmp_path / "e"), "--quiet"], capsys)
    assert "solver: exact (auto: N=120 training points ≤ 20000)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--solver", "cg", "--t", "5"], "--t (a finite training time) needs --solver exact or falkon"),
     (["--solver", "features", "--t", "5"], "--t (a finite training time) needs --solver exact or falkon"),
     (["--solver", "features", "--features", "1"], "--features must be >= 2"),
     (["--solver", "falkon", "--validation", "1.5"], "--validation must be in [0, 1)"),
     (["--solver", "falkon", "--centers", "0"], "--centers must be >= 1"),
     (["--solver", "falkon", "--maxiter", "0"], "maxiter must be an integer >= 1")],
)
def test_fit_large_n_bad_input_is_one_line(tmp_path, capsys, args, message):
    code, _, err = run(["fit", "--data", "iris", *args, "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
