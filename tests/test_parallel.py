"""Data parallelism on 4 forced CPU devices (in subprocesses): same numbers as 1 device, checkpoints move
between device counts, and a batch that does not divide is a clear error."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rnn_jax import parallel

REPO = pathlib.Path(__file__).resolve().parents[1]
# Four forced CPU devices, on the CPU backend even on a machine with an accelerator.
ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("dp") / "text.txt"
    path.write_text("\n".join(" ".join(rng.choice(["to", "be", "or", "not"], size=6)) for _ in range(800)) + "\n")
    return path


def run(corpus, run_dir, devices, resume=False):
    args = [sys.executable, str(REPO / "tests" / "dp_worker.py"), str(corpus), str(run_dir), str(devices)]
    done = subprocess.run(args + (["resume"] if resume else []), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {n: (run(corpus, base / f"d{n}", n), base / f"d{n}") for n in (1, 4)}


def test_four_devices_match_one(runs):
    (one, _), (four, _) = runs[1], runs[4]
    assert four["devices"] == 4 and four["used"] == 4 and one["used"] == 1
    np.testing.assert_allclose(four["valid"], one["valid"], rtol=1e-5)
    np.testing.assert_allclose(four["test"], one["test"], rtol=1e-5)


@pytest.mark.parametrize("saved_on, restored_on", [pytest.param(4, 1, marks=pytest.mark.slow), (1, 4)])
def test_checkpoints_restore_on_another_device_count(corpus, runs, tmp_path, saved_on, restored_on):
    finished, source = runs[saved_on]
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    for entry in (run_dir / "checkpoints").iterdir():  # stop the saved run in the middle of epoch 1
        if entry.name.isdigit() and int(entry.name) > 3:
            shutil.rmtree(entry)
    resumed = run(corpus, run_dir, restored_on, resume=True)
    np.testing.assert_allclose(resumed["valid"], finished["valid"], rtol=1e-5)
    np.testing.assert_allclose(resumed["test"], finished["test"], rtol=1e-5)


def test_batch_must_divide_over_devices():
    mesh = parallel.make_mesh(1)
    parallel.check_divisible(8, mesh)
    with pytest.raises(ValueError, match="num_devices must be between 1 and the 1 visible"):
        parallel.make_mesh(3)


def test_indivisible_batch_is_a_clear_error(corpus, tmp_path):
    code = ("import sys; sys.argv=['x']; from tests import dp_worker; "
            f"dp_worker.main({str(corpus)!r}, {str(tmp_path / 'r')!r}, 3)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "batch_size=8 does not divide over 3 devices" in done.stderr


@pytest.mark.parametrize("cell", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_sharded_step_runs_each_devices_rows_only(cell):
    """4 devices, batch 8: every native kernel runs on 2 rows (the loss kernel on 5 steps x 2), no row is gathered
    onto another device (the gradients' all-reduce is the only collective), and the step equals the 1-device one."""
    done = subprocess.run([sys.executable, str(REPO / "tests" / "dp_worker.py"), "sharding", cell], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4 and report["difference"] < 1e-5
    assert report["all_gathers"] == 0 and report["all_reduces"] > 0
    if report["native"]:
        assert report["kernel_rows"] == [2] and report["xent_rows"] == [10]


def test_rows_product_equals_einsum_with_and_without_a_mesh():
    lhs, rhs = np.random.default_rng(0).normal(size=(2, 3, 4, 5)), np.random.default_rng(1).normal(size=(2, 3, 4, 7))
    want = np.einsum("abci,abcj->ij", lhs, rhs)
    np.testing.assert_allclose(parallel.rows_product(lhs, rhs), want, rtol=1e-5)
    np.testing.assert_allclose(parallel.rows_product(lhs[..., 0], rhs), want[0], rtol=1e-5)
    code = ("import numpy as np, jax; from rnn_jax import parallel; a = np.ones((3, 8, 5)); b = np.ones((3, 8, 2)); "
            "f = jax.jit(parallel.rows_product); g = parallel.under_mesh(parallel.make_mesh(4), f); "
            "print(parallel.several_devices(), float(np.abs(g(a, b) - 24).max()), float(np.abs(g(b, a) - 24).max()))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "0.0", "0.0"]
