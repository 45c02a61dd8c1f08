"""The machine record and the product-rate table: every form of every shape measured and printed."""

from experiments import bench_machine
from rnn_jax import kernels


def test_product_rates_and_loop_tables(monkeypatch, capsys):
    monkeypatch.setattr(bench_machine, "PRODUCT_SHAPES", ((32, 16, 8),))
    monkeypatch.setattr(bench_machine, "ROUNDS", 1)
    monkeypatch.setattr(bench_machine, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(bench_machine, "GRADIENT_SHAPES", ((24, 8, 16),))
    monkeypatch.setattr(bench_machine, "LOOP_SHAPES", ((3, 34),))
    monkeypatch.setattr(bench_machine, "LOOP_STEPS", 4)
    rows = bench_machine.main([])
    out = capsys.readouterr().out
    assert "| 32 x 16 x 8 |" in out and "bf16 operands, float32 sums" in out
    assert set(rows[0]["gflops"]) == set(bench_machine.PRODUCT_FORMS)
    assert all(rate > 0 for rate in rows[0]["gflops"].values())
    assert "| 24 x 8 x 16 |" in out and rows[1]["gradient_shape"] == (24, 8, 16)
    assert set(rows[1]["gflops"]) == set(bench_machine.GRADIENT_FORMS) and min(rows[1]["gflops"].values()) > 0
    if kernels.available(native=True):
        loop = rows[2]
        assert "| 3 x 34 |" in out and loop["shape"] == (3, 34) and loop["us_per_step"]["float32"] > 0
        has_dot = "avx512_bf16" in bench_machine.cpu_description()["flags"]
        assert ("bf16 dot products" in loop["us_per_step"]) == has_dot == (loop["bf16_over_float32"] is not None)
    else:
        assert len(rows) == 2 and "no loop table" in out


def test_the_cpu_record_names_the_fast_path_flags():
    cpu = bench_machine.cpu_description()
    assert set(cpu) == {"model", "flags"}
    assert set(cpu["flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
