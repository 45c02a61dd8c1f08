"""The benchmark suite's script, on its smallest workload: tables, JSON and plots come out and agree."""

import json
import math
import time

import jax
import pytest

from experiments import bench_lm


def test_bench_lm_writes_json_tables_and_plots(tmp_path, capsys):
    report = bench_lm.main(["--configs", "notes", "--cells", "lstm", "--workloads", "train",
                            "--implementations", "fused,torch,products_only", "--rounds", "1", "--min-seconds", "0.01",
                            "--compile-lengths", "16", "--out", str(tmp_path), "--reuse-host-memory", "false"])
    out = capsys.readouterr().out
    assert "notes lstm train" in out and "default / best peer" in out
    saved = json.loads((tmp_path / "bench_lm.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    assert saved["machine"]["matmul_peak_flops"] > 0 and saved["machine"]["host_memory_reused"] is False
    impls = {(r["workload"], r["impl"]) for r in saved["results"]}
    assert impls == {("train", "fused"), ("train", "torch"), ("train", "products_only")}
    for r in saved["results"]:
        assert r["min"] <= r["tokens_per_s"] <= r["max"] and 0 < r["flops_fraction"] < 1
        assert len(r["rounds"]) == 1 and r["rounds"][0] == r["tokens_per_s"]
    fused = next(r for r in saved["results"] if r["impl"] == "fused")
    assert 0 < fused["compile_s"] < fused["first_step_s"]  # the first step adds set-up and one run to the compile
    torch_row = next(r for r in saved["results"] if r["impl"] == "torch")
    assert torch_row["compile_s"] is None  # eager: nothing compiled
    assert fused["temp_bytes"] > 0 and torch_row["temp_bytes"] > 0
    assert set(saved["compile_vs_T"]["lstm"][0]) == {"T", "fused", "unroll=1", "full unroll"}
    assert all(seconds > 0 for seconds in saved["compile_vs_T"]["lstm"][0].values())
    table = (tmp_path / "bench_lm.md").read_text()
    assert "| notes | lstm | train |" in table and "1.5x" in table
    # The bar's required share of peak is 1.5x the peer's share, as printed.
    torch_share = next(r["flops_fraction"] for r in saved["results"] if r["impl"] == "torch")
    row = next(line for line in table.splitlines() if line.startswith("| notes | lstm | train |"))
    assert f"| {100 * 1.5 * torch_share:.0f}% |" in row
    speed = {r["impl"]: r["tokens_per_s"] for r in saved["results"]}
    ratio = speed["fused"] / speed["torch"]
    assert f"| {ratio:.2f}x | {ratio:.2f}-{ratio:.2f}x | 1.5x |" in row  # one round: its ratio is the median's
    # The reference is neither a peer nor the default: its own two columns, last.
    assert row.endswith(f"% | {speed['fused'] / speed['products_only']:.2f} | "
                        f"{speed['products_only'] / speed['torch']:.2f}x |")
    assert "products only / best peer" in table.splitlines()[2]
    for png in ("bench_lm_tokens.png", "bench_compile_vs_T.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_torch_cpu_peak_bytes_counts_what_is_live_at_once():
    torch = pytest.importorskip("torch")
    n = 1 << 20  # 4 MiB of float32
    held = [torch.ones(n)]

    def one_then_another():
        first = torch.ones(n)
        first.add_(1)
        del first  # freed before the second: the peak is one block, not two
        return torch.ones(n)

    def two_at_once():
        first, second = torch.ones(n), torch.ones(n)
        return first + second  # a third block while both are live

    def drop_a_block_from_before():
        held.clear()  # frees 4 MiB allocated before the call: its size is unknown, so it is not subtracted
        return torch.ones(n // 2)

    mib = 2**20
    assert 4 * mib <= bench_lm.torch_cpu_peak_bytes(one_then_another) < 4.1 * mib
    assert 12 * mib <= bench_lm.torch_cpu_peak_bytes(two_at_once) < 12.1 * mib
    assert 2 * mib <= bench_lm.torch_cpu_peak_bytes(drop_a_block_from_before) < 2.1 * mib
    assert bench_lm.torch_cpu_peak_bytes(lambda: None) == 0


def test_timed_rounds_leave_each_turns_first_call_untimed():
    """Two implementations whose first call after the other one ran is slow (0.2 s, else 2-4 ms): only the fast
    calls are timed (a counted slow call would put that round below 10 / 0.2 = 50 tokens/s)."""
    last = [None]

    def entry(name, fast):
        def run():
            time.sleep(0.2 if last[0] != name else fast)
            last[0] = name
        return run, lambda _: None

    entries = {"a": entry("a", 0.002), "b": entry("b", 0.004)}
    rates = bench_lm.timed_rounds(entries, rounds=3, min_seconds=0.02, tokens_per_call=10)
    assert [len(r) for r in rates.values()] == [3, 3]
    assert min(rates["a"] + rates["b"]) > 100 and max(rates["a"]) < 10 / 0.002 and max(rates["b"]) < 10 / 0.004
    untimed = bench_lm.timed_rounds(entries, rounds=2, min_seconds=0.02, tokens_per_call=10, warmup_calls=0)
    assert max(untimed["a"] + untimed["b"]) <= 50  # without the warm-up the switch is what gets timed


def test_round_ratios_pair_each_round_with_the_fastest_peer_of_that_round():
    default = {"rounds": [10.0, 12.0, 9.0]}
    peers = [{"rounds": [5.0, 8.0, 6.0]}, {"rounds": [4.0, 10.0, 3.0]}]
    assert bench_lm.round_ratios(default, peers) == [2.0, 1.2, 1.5]
    assert bench_lm.round_ratios(default, []) == [] and bench_lm.round_ratios({}, peers) == []


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="on a GPU these peers run instead of being skipped")
def test_gpu_peers_are_reported_skipped_without_a_gpu(tmp_path):
    report = bench_lm.main(["--configs", "notes", "--cells", "lstm,gru", "--workloads", "train",
                            "--implementations", "fused,torch_cuda,jax_rnn", "--rounds", "1", "--min-seconds", "0.01",
                            "--compile-lengths", "", "--out", str(tmp_path), "--reuse-host-memory", "false"])
    assert {r["impl"] for r in report["results"]} == {"fused"}
    reasons = {(r["cell"], r["impl"]): r["reason"] for r in report["skipped"]}
    assert set(reasons) == {(cell, impl) for cell in ("lstm", "gru") for impl in ("torch_cuda", "jax_rnn")}
    assert "cuDNN" in reasons["lstm", "jax_rnn"] and "no peer" in reasons["gru", "jax_rnn"]
    assert "CUDA" in reasons["lstm", "torch_cuda"]
    table = (tmp_path / "bench_lm.md").read_text()
    assert "| notes | gru | train | jax_rnn | skipped: no peer: jax_rnn has no gru cell" in table
    assert report["compile_vs_T"] == {"lstm": [], "gru": []}  # --compile-lengths "": none measured, none plotted
    assert (tmp_path / "bench_lm_tokens.png").exists() and not (tmp_path / "bench_compile_vs_T.png").exists()


def _packed_lstm_ref(x, h0, c0, weights, lengths, input_size, hidden_size, num_layers, dropout, bidirectional):
    """jax.experimental.rnn.lstm's signature over its pure-JAX reference, which runs without cuDNN."""
    from jax.experimental import rnn

    unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    return rnn.lstm_ref(x, h0, c0, *unpacked, lengths, input_size, hidden_size, num_layers, dropout, bidirectional)


@pytest.mark.parametrize("train, bias", [(True, True), (True, False), (False, True)])
def test_jax_rnn_peer_model_trains_with_a_reference_lstm(train, bias):
    w = bench_lm.Workload("tiny", vocab=30, hidden=8, layers=2, steps=5, batch=3, bias=bias, embed=6)
    built = bench_lm.jax_rnn_step(w, "lstm", train, lstm=_packed_lstm_ref)
    assert built.compile_s > 0 and built.temp_bytes >= 0
    losses = [float(built.wait(built.run())) for _ in range(30)]
    assert all(math.isfinite(loss) for loss in losses)
    if train:  # SGD on one fixed batch: the loss falls, step after step
        assert losses[-1] < losses[0] - 0.03 and all(b < a for a, b in zip(losses, losses[1:]))
    else:
        assert losses[-1] == losses[0]


def _xla_flops(jitted, *args) -> float:
    """XLA's FLOP count of the compiled call (its cost analysis)."""
    counted = jitted.lower(*args).compile().cost_analysis()
    return (counted[0] if isinstance(counted, list) else counted)["flops"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("train", [True, False])
def test_products_only_does_the_workloads_flops_and_the_native_calls_compute_the_same(cell, train):
    """XLA's own count of the reference's FLOPs (output layer in XLA) against `flops_per_token`, with E != H and
    two layers (the second layer's input is H wide); the softmax's elementwise work is the little above it."""
    w = bench_lm.Workload("t", vocab=64, hidden=32, layers=2, steps=4, batch=5, bias=True, embed=16)
    step, operands = bench_lm.products_only(w, cell, train, native=False)
    expected = w.flops_per_token(cell, train) * w.batch * w.steps
    assert expected <= _xla_flops(step, operands) <= 1.05 * expected
    native_step, native_operands = bench_lm.products_only(w, cell, train)
    for mine, reference in zip(native_step(native_operands), step(operands), strict=True):
        assert abs(float(mine) - float(reference)) <= 1e-4 * (1 + abs(float(reference)))


def test_chain_products_keeps_every_repeat_of_a_product():
    """XLA merges repeats of one product behind an `optimization_barrier` into one; the chain's data dependence
    keeps all of them (XLA's own FLOP count of the compiled call)."""
    w = bench_lm.Workload("t", vocab=64, hidden=32, layers=1, steps=4, batch=5, bias=True, embed=16)
    operands, products = bench_lm.step_products(w, "gru", True, native=False)

    def flops(repeats):
        return _xla_flops(jax.jit(lambda o: bench_lm.chain_products(products[:1], o, repeats)), operands)

    assert 3.9 * flops(1) <= flops(4) <= 4.2 * flops(1)


def test_a_cell_without_a_peer_is_reported_as_no_peer():
    for peer in ("torch", "flax"):
        with pytest.raises(bench_lm.PeerUnavailable, match="no peer"):
            bench_lm.build(peer, bench_lm.CONFIGS["notes"] if hasattr(bench_lm, "CONFIGS") else None, "indrnn", True)
    w = bench_lm.Workload("x", 100, 20, 2, 5, 4, True, 10)
    assert w.flops_per_token("lstm", False) == 2 * 4 * 20 * (10 + 20) + 2 * 4 * 20 * 40 + 2 * 100 * 20
    assert w.flops_per_token("indrnn", False) == 2 * 20 * (10 + 20) + 2 * 100 * 20


def test_cpu_only_rows_are_skipped_on_an_accelerator(monkeypatch):
    monkeypatch.setattr(bench_lm.jax, "default_backend", lambda: "gpu")
    for name in ("torch", "fused_xla"):
        with pytest.raises(bench_lm.PeerUnavailable, match="a CPU-only row .* on the gpu backend"):
            bench_lm.build(name, bench_lm.workload("notes"), "lstm", True)


def test_the_machine_record_names_the_cpu_and_its_flags():
    machine = bench_lm.device_description()
    assert machine["platform"] == jax.devices()[0].platform and machine["device_kind"]
    assert machine["cpu"]["model"] != "" and set(machine["cpu"]["flags"]) <= {"avx2", "avx512f", "avx512_bf16",
                                                                              "amx_bf16", "amx_tile"}


def test_bf16_rows_compare_with_pytorch_autocast(tmp_path):
    pytest.importorskip("torch")
    report = bench_lm.main(["--configs", "notes", "--cells", "gru", "--workloads", "train",
                            "--implementations", "fused,fused_bf16,torch,torch_bf16", "--rounds", "1",
                            "--min-seconds", "0.01", "--compile-lengths", "", "--out", str(tmp_path),
                            "--reuse-host-memory", "false"])
    speed = {r["impl"]: r["tokens_per_s"] for r in report["results"]}
    assert set(speed) == {"fused", "fused_bf16", "torch", "torch_bf16"}
    assert "flags" in report["machine"]["cpu"]  # avx512_bf16 / amx_bf16 recorded where the CPU has them
    table = (tmp_path / "bench_lm.md").read_text()
    assert "bf16 / torch bf16" in table
    row = next(line for line in table.splitlines() if line.startswith("| notes | gru | train |"))
    # the float32 default against float32 peers, the bf16 row against PyTorch's autocast
    assert f"| {speed['fused'] / speed['torch']:.2f}x |" in row
    assert row.endswith(f"| {speed['fused_bf16'] / speed['torch_bf16']:.2f}x |")
