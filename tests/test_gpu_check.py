"""The prepared GPU check, in its CPU dry run: every stage runs and writes its output; the GPU-only peers are
reported as skipped, not failed."""

import json
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_gpu_check_dry_run_passes_every_stage(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", "experiments/gpu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OUT": str(out), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "summary.txt").read_text().strip() == "gpu_check: all stages passed"
    files = sorted(path.name for path in out.iterdir())
    assert files == ["0_env.txt", "1_tests.txt", "2_bench_lm.txt", "3_bench_scan.txt", "bench_lm.json",
                     "bench_scan.json", "summary.txt"]  # few enough files to come back from a device run
    assert "passed" in (out / "1_tests.txt").read_text()
    bench = json.loads((out / "bench_lm.json").read_text())
    assert {r["impl"] for r in bench["results"]} == {"fused", "fused_bf16", "scan_unroll4"}
    assert {r["impl"] for r in bench["skipped"]} == {"torch_cuda", "jax_rnn"}  # no GPU here
    assert json.loads((out / "bench_scan.json").read_text())["results"]
