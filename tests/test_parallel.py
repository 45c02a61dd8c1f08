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
ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=str(REPO))


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


@pytest.mark.parametrize("saved_on, restored_on", [(4, 1), (1, 4)])
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
