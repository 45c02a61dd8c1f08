"""The machine record and the product-rate table: every form of every shape measured and printed."""

from experiments import bench_machine


def test_product_rates_table(monkeypatch, capsys):
    monkeypatch.setattr(bench_machine, "PRODUCT_SHAPES", ((32, 16, 8),))
    rows = bench_machine.main([])
    out = capsys.readouterr().out
    assert "| 32 x 16 x 8 |" in out and "bf16 operands, float32 sums" in out
    assert len(rows) == 1 and set(rows[0]["gflops"]) == set(bench_machine.PRODUCT_FORMS)
    assert all(rate > 0 for rate in rows[0]["gflops"].values())


def test_the_cpu_record_names_the_fast_path_flags():
    cpu = bench_machine.cpu_description()
    assert set(cpu) == {"model", "flags"}
    assert set(cpu["flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
