"""The distribution: a wheel built from this checkout ships the license, the type marker, the kernel sources and
the console commands, and nothing from outside the package."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

import rnn_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = out.glob("rnn_jax_lab-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_license_types_kernels_and_commands(wheel):
    names = wheel.namelist()
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert dist_info == f"rnn_jax_lab-{rnn_jax.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names and "rnn_jax/py.typed" in names
    assert {"rnn_jax/kernels/recurrent.cc", "rnn_jax/kernels/xent.cc", "rnn_jax/kernels/simd.h"} <= set(names)
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "rnn-jax-train = rnn_jax.commands.train:run" in entry_points
    assert "rnn-jax-sample = rnn_jax.commands.sample:run" in entry_points
    assert {name.split("/")[0] for name in names} == {"rnn_jax", dist_info}  # no experiments/, tests/, docs/
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Python: >=3.10" in metadata


def test_no_module_reads_the_shared_folder():
    sources = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "rnn_jax").rglob("*.py"))
    assert "shared_dir" not in sources and "RNN_JAX_SHARED" not in sources
    assert "parents[2]" not in sources  # a path resolved beside the checkout
