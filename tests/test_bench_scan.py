"""The sequential-vs-parallel scan benchmark on tiny sizes: every form runs, agrees with scan, and is reported."""

import json

import pytest

from experiments import bench_scan
from rnn_jax.errors import ConfigError

TINY = ["--lengths", "16", "--batch-size", "2", "--input-size", "3", "--hidden-size", "5", "--rounds", "2",
        "--min-seconds", "0.001"]


def test_bench_scan_writes_json_tables_and_plots(tmp_path, capsys):
    report = bench_scan.main(TINY + ["--cells", "mingru,lru", "--workloads", "train", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "[1/2] mingru train T=16" in out and "[2/2] lru train T=16" in out  # progress, group by group
    saved = json.loads((tmp_path / "bench_scan.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    forms = {(r["cell"], r["form"]) for r in saved["results"]}
    assert {form for cell, form in forms if cell == "mingru"} == set(bench_scan.FORMS)
    assert {form for cell, form in forms if cell == "lru"} == set(bench_scan.FORMS) - {"associative_log"}
    for r in saved["results"]:
        assert r["min"] <= r["tokens_per_s"] <= r["max"] and len(r["rounds"]) == 2
        assert r["compile_s"] > 0 and r["temp_bytes"] >= 0
        # Forward states, or the loss and gradients, equal scan's (float32).
        assert r["max_abs_diff_vs_first"] < 1e-4, r
    scan_rows = [r for r in saved["results"] if r["form"] == "scan"]
    assert all(r["vs_first"] == 1.0 and r["max_abs_diff_vs_first"] == 0.0 for r in scan_rows)
    table = (tmp_path / "bench_scan.md").read_text()
    assert "| mingru | train | 16 |" in table and "associative / scan" in table
    assert bench_scan.main(TINY + ["--cells", "lru", "--forms", "scan,associative", "--workloads", "forward",
                                   "--out", ""])["results"][1]["max_abs_diff_vs_first"] < 1e-5  # states agree too
    for png in ("bench_scan_tokens.png", "bench_scan_memory.png", "bench_scan_compile.png"):
        assert (tmp_path / png).stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["--cells", "lstm"], "not state-linear"),
    (["--forms", "scan,blelloch"], "unknown form"),
    (["--workloads", "infer"], "unknown workload"),
])
def test_bench_scan_refuses_what_it_cannot_run(argv, message):
    with pytest.raises(ConfigError, match=message):
        bench_scan.main(TINY + argv + ["--out", ""])
