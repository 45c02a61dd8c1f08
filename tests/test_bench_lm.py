"""The benchmark suite's script, on its smallest workload: tables, JSON and plots come out and agree."""

import json

from experiments import bench_lm


def test_bench_lm_writes_json_tables_and_plots(tmp_path, capsys):
    report = bench_lm.main(["--configs", "notes", "--cells", "lstm", "--workloads", "train",
                            "--implementations", "fused,torch", "--rounds", "1", "--min-seconds", "0.01",
                            "--compile-lengths", "16", "--out", str(tmp_path), "--reuse-host-memory", "false"])
    out = capsys.readouterr().out
    assert "notes lstm train" in out and "default / best peer" in out
    saved = json.loads((tmp_path / "bench_lm.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    assert saved["machine"]["matmul_peak_flops"] > 0 and saved["machine"]["host_memory_reused"] is False
    impls = {(r["workload"], r["impl"]) for r in saved["results"]}
    assert impls == {("train", "fused"), ("train", "torch")}
    for r in saved["results"]:
        assert r["min"] <= r["tokens_per_s"] <= r["max"] and 0 < r["flops_fraction"] < 1
    assert set(saved["compile_vs_T"]["lstm"][0]) == {"T", "fused", "unroll=1", "full unroll"}
    table = (tmp_path / "bench_lm.md").read_text()
    assert "| notes | lstm | train |" in table and "1.5x" in table
    # The bar's required share of peak is 1.5x the peer's share, as printed.
    torch_share = next(r["flops_fraction"] for r in saved["results"] if r["impl"] == "torch")
    row = next(line for line in table.splitlines() if line.startswith("| notes | lstm | train |"))
    assert row.rstrip(" |").endswith(f"{100 * 1.5 * torch_share:.0f}%")
    for png in ("bench_lm_tokens.png", "bench_compile_vs_T.png"):
        assert (tmp_path / png).stat().st_size > 1000
