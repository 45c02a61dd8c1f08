"""The native loop kernels (`rnn_jax.kernels`) against a `lax.scan` oracle, and their use by `fused_scan`."""

import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import fused_scan, gru, kernels, lstm
from rnn_jax.cells.gru import HiddenState, _reset_after_forward
from rnn_jax.cells.lstm import LSTMState, _forward

needs_kernel = pytest.mark.skipif(not kernels.available(), reason="native kernel unavailable here (no C++ compiler, RNN_JAX_NATIVE=0, or not the CPU backend)")


def scan_oracle(projected, W, h0, c0, d_hs, d_h_final, d_c_final, reverse):
    """hs, cs, acts and the cotangents of (projected, h0, c0), by autodiff of a plain lax.scan of the notes' LSTM."""
    batch, hidden = h0.shape

    def run(projected, h0, c0):
        def body(carry, p):
            new, h, (i, f, o, g, _) = _forward(None, carry, p.reshape(batch, 4, hidden),
                                               (carry.h @ W.T).reshape(batch, 4, hidden))
            return new, (h, new.c, jnp.concatenate([i, f, o, g], -1))

        final, outputs = jax.lax.scan(body, LSTMState(h0, c0), projected, reverse=reverse)
        return final, outputs

    (final, outputs), vjp = jax.vjp(run, projected, h0, c0)
    zeros = jnp.zeros_like(outputs[1])
    grads = vjp((LSTMState(d_h_final, d_c_final), (d_hs, zeros, jnp.zeros_like(outputs[2]))))
    return outputs, grads


def random_case(steps, batch, hidden, seed=0):
    keys = jax.random.split(jax.random.key(seed), 7)
    normal = lambda k, shape, scale=1.0: scale * jax.random.normal(k, shape, jnp.float32)
    return (normal(keys[0], (steps, batch, 4 * hidden)), normal(keys[1], (4 * hidden, hidden), hidden ** -0.5),
            normal(keys[2], (batch, hidden)), normal(keys[3], (batch, hidden)), normal(keys[4], (steps, batch, hidden)),
            normal(keys[5], (batch, hidden)), normal(keys[6], (batch, hidden)))


@needs_kernel
@pytest.mark.parametrize("steps, batch, hidden", [
    (1, 1, 1),      # the smallest case: one unit in a 16-wide panel
    (7, 5, 37),     # H not a multiple of 16: padded panels and a partial last vector
    (5, 25, 20),    # B > 24: the product splits the rows into blocks
    (9, 16, 64),    # enough work per step for helper threads
])
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_and_backward_equal_autodiff_of_a_scan(steps, batch, hidden, reverse):
    projected, W, h0, c0, d_hs, d_h_final, d_c_final = random_case(steps, batch, hidden)
    hs, cs, acts = kernels.lstm_forward(projected, W, h0, c0, reverse=reverse)
    (want_hs, want_cs, want_acts), (want_dp, want_dh0, want_dc0) = scan_oracle(
        projected, W, h0, c0, d_hs, d_h_final, d_c_final, reverse)
    for got, want in ((hs, want_hs), (cs, want_cs), (acts, want_acts)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    d_pre, d_h0, d_c0 = kernels.lstm_backward(W, acts, cs, c0, d_hs, d_h_final, d_c_final, reverse=reverse)
    for got, want in ((d_pre, want_dp), (d_h0, want_dh0), (d_c0, want_dc0)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def gru_scan_oracle(projected, W, b_rg, h0, d_hs, d_h_final, reverse):
    """hs, acts and the cotangents of (projected, W h, b_rg, h0) by autodiff of a lax.scan of the reset-after GRU."""
    batch, hidden = h0.shape

    def run(projected, b_rg, h0, rec_offset):
        def body(carry, inputs):
            p, offset = inputs
            rec = (carry.h @ W.T + offset).reshape(batch, 3, hidden)
            new, h, (r, u, g, rho) = _reset_after_forward(b_rg, carry, p.reshape(batch, 3, hidden), rec)
            return new, (h, jnp.concatenate([r, u, g, rho], -1))

        return jax.lax.scan(body, HiddenState(h0), (projected, rec_offset), reverse=reverse)

    (final, outputs), vjp = jax.vjp(run, projected, b_rg, h0, jnp.zeros_like(projected))
    grads = vjp((HiddenState(d_h_final), (d_hs, jnp.zeros_like(outputs[1]))))
    return outputs, grads


@needs_kernel
@pytest.mark.parametrize("steps, batch, hidden", [(1, 1, 1), (7, 5, 37), (5, 25, 20), (9, 16, 64)])
@pytest.mark.parametrize("reverse", [False, True])
def test_gru_forward_and_backward_equal_autodiff_of_a_scan(steps, batch, hidden, reverse):
    keys = jax.random.split(jax.random.key(1), 6)
    projected = jax.random.normal(keys[0], (steps, batch, 3 * hidden))
    W = jax.random.normal(keys[1], (3 * hidden, hidden)) * hidden ** -0.5
    b_rg, h0 = jax.random.normal(keys[2], (hidden,)), jax.random.normal(keys[3], (batch, hidden))
    d_hs, d_h_final = jax.random.normal(keys[4], (steps, batch, hidden)), jax.random.normal(keys[5], (batch, hidden))
    hs, acts = kernels.gru_forward(projected, W, b_rg, h0, reverse=reverse)
    (want_hs, want_acts), (want_dp, want_db_rg, want_dh0, want_drec) = gru_scan_oracle(
        projected, W, b_rg, h0, d_hs, d_h_final, reverse)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(acts, want_acts, rtol=1e-5, atol=2e-6)
    d_projected, d_rec, d_h0 = kernels.gru_backward(W, acts, hs, h0, d_hs, d_h_final, reverse=reverse)
    for got, want in ((d_projected, want_dp), (d_rec, want_drec), (d_h0, want_dh0),
                      (d_rec[..., 2 * hidden:].sum((0, 1)), want_db_rg)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(want))))


@needs_kernel
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bias_added_in_the_kernel_equals_bias_added_to_the_inputs(cell):
    """The forward kernels add b themselves (fused_scan passes U x_t without it): the same as adding it to the
    inputs first, to the bit, since the sum (P + b) + W h runs in the same order either way."""
    steps, batch, hidden = 6, 5, 37
    gates = 4 if cell == "lstm" else 3
    keys = jax.random.split(jax.random.key(2), 5)
    projected = jax.random.normal(keys[0], (steps, batch, gates * hidden))
    W = jax.random.normal(keys[1], (gates * hidden, hidden)) * hidden ** -0.5
    bias = jax.random.normal(keys[2], (gates * hidden,))
    h0 = jax.random.normal(keys[3], (batch, hidden))
    if cell == "lstm":
        c0 = jax.random.normal(keys[4], (batch, hidden))
        run = lambda p, b: kernels.lstm_forward(p, W, h0, c0, b)
    else:
        b_rg = jax.random.normal(keys[4], (hidden,))
        run = lambda p, b: kernels.gru_forward(p, W, b_rg, h0, b)
    for got, want in zip(run(projected, bias), run(projected + bias, None)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(Exception, match=r"and the bias \(%dH,\)" % gates):
        jax.block_until_ready(run(projected, bias[:-1]))


@needs_kernel
def test_saturated_and_non_finite_gates():
    """Pre-activations of ±100 saturate exactly as the reference does; a NaN input stays NaN (the train step's
    non-finite guard relies on it)."""
    projected, W, h0, c0, *_ = random_case(3, 2, 16)
    projected = projected.at[0, 0, :16].set(100.0).at[0, 0, 16:32].set(-100.0).at[1, 1, 5].set(jnp.nan)
    hs, cs, acts = kernels.lstm_forward(projected, W, h0, c0)
    (want_hs, want_cs, _), _ = scan_oracle(projected, W, h0, c0, *(jnp.zeros_like(a) for a in (cs, h0, c0)), False)
    np.testing.assert_allclose(hs[0], want_hs[0], rtol=1e-5, atol=1e-6)
    assert bool(jnp.isnan(hs[1, 1]).any()) and bool(jnp.isnan(hs[2]).any())
    assert not bool(jnp.isnan(hs[0]).any())


def fused_loss(cell, native, reverse=False, time_major=False):
    def loss(params, carry, xs, weights):
        final, hs = fused_scan(cell, params, carry, xs, reverse=reverse, time_major=time_major, native=native)
        return jnp.sum(hs * weights) + sum(jnp.sum(state * (0.3 + k)) for k, state in enumerate(final))
    return loss


@needs_kernel
@pytest.mark.parametrize("cell, kernel", [(lstm, "rnn_jax_lstm"), (gru, "rnn_jax_gru")], ids=["lstm", "gru"])
@pytest.mark.parametrize("reverse, time_major, batch_shape, use_bias", [
    (False, False, (3,), True), (True, False, (3,), False), (False, True, (2, 3), True), (True, True, (), True)])
def test_fused_scan_native_equals_its_xla_loop(cell, kernel, reverse, time_major, batch_shape, use_bias):
    steps, E, H = 6, 5, 19
    options = {"reset_after": True} if cell is gru else {}
    params = cell.init(jax.random.key(0), E, H, use_bias=use_bias, **options)
    carry = jax.tree.map(lambda a: a + 0.1, cell.initial_state(H, batch_shape))
    xs_shape = (steps,) + batch_shape + (E,) if time_major else batch_shape + (steps, E)
    xs = jax.random.normal(jax.random.key(1), xs_shape)
    weights = jax.random.normal(jax.random.key(2), xs_shape[:-1] + (H,))
    args = (params, carry, xs, weights)
    native, xla = (fused_loss(cell, flag, reverse, time_major) for flag in (True, False))
    assert kernel + "_backward" in str(jax.make_jaxpr(jax.grad(native, (0, 1, 2)))(*args))
    assert "rnn_jax_" not in str(jax.make_jaxpr(jax.grad(xla, (0, 1, 2)))(*args))
    np.testing.assert_allclose(jax.jit(native)(*args), xla(*args), rtol=1e-5)
    got, want = (jax.jit(jax.grad(f, (0, 1, 2)))(*args) for f in (native, xla))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), got, want)


@needs_kernel
@pytest.mark.parametrize("cell", [lstm, gru], ids=["lstm", "gru"])
def test_vmap_folds_the_mapped_axis_into_one_kernel_call(cell):
    """Per-example values and gradients of code written for one batch and vmapped over 3 of them equal the XLA
    loop's; each loop is a single kernel call over 3 x 2 rows, with no per-example loop around it."""
    steps, E, H = 5, 4, 8
    options = {"reset_after": True} if cell is gru else {}
    params = cell.init(jax.random.key(0), E, H, **options)
    xs = jax.random.normal(jax.random.key(1), (3, 2, steps, E))
    weights = jax.random.normal(jax.random.key(2), (3, 2, steps, H))
    carry = cell.initial_state(H, (2,))  # shared by every example: broadcast into the folded rows

    @functools.partial(jax.jit, static_argnums=0)
    def per_example(native):
        loss = fused_loss(cell, native)
        return jax.vmap(jax.value_and_grad(loss, (0, 2)), in_axes=(None, None, 0, 0))(params, carry, xs, weights)

    got, want = per_example(True), per_example(False)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), got, want)
    jaxpr = str(jax.make_jaxpr(lambda: per_example(True))())
    gates = 4 if cell is lstm else 3
    assert f"f32[{steps},6,{gates * H}]" in jaxpr and "scan" not in jaxpr and "while" not in jaxpr


@needs_kernel
def test_vmap_over_weights_and_nested_vmap():
    """An ensemble (the weights themselves mapped) runs one call per member; a vmap inside a vmap folds twice."""
    steps, E, H = 4, 3, 6
    members = jax.vmap(lambda k: lstm.init(k, E, H))(jax.random.split(jax.random.key(0), 3))
    xs = jax.random.normal(jax.random.key(1), (3, 2, steps, E))
    run = jax.jit(lambda native: jax.vmap(lambda p, x: fused_scan(lstm, p, lstm.initial_state(H, (2,)), x,
                                                                  native=native)[1])(members, xs), static_argnums=0)
    np.testing.assert_allclose(run(True), run(False), rtol=1e-5, atol=1e-6)
    params = lstm.init(jax.random.key(2), E, H)
    nested_xs = jax.random.normal(jax.random.key(3), (2, 3, steps, E))  # two vmaps over single sequences
    nested = jax.jit(lambda native: jax.vmap(jax.vmap(lambda x: fused_scan(lstm, params, lstm.initial_state(H), x,
                                                                           native=native)[1]))(nested_xs),
                     static_argnums=0)
    np.testing.assert_allclose(nested(True), nested(False), rtol=1e-5, atol=1e-6)
    assert f"f32[{steps},6,{4 * H}]" in str(jax.make_jaxpr(lambda: nested(True))())


@needs_kernel
def test_softmax_xent_under_vmap():
    logits = 2.0 * jax.random.normal(jax.random.key(0), (3, 5, 40))
    biases = jax.random.normal(jax.random.key(1), (3, 40))
    targets = jax.random.randint(jax.random.key(2), (3, 5), 0, 40)
    for in_axes in ((0, None, 0), (0, 0, 0)):  # a shared bias (folded rows) and a mapped one (a call each)
        bias = biases[0] if in_axes[1] is None else biases
        for kernel in (kernels.softmax_xent_forward, kernels.softmax_xent_value_and_grad):
            got = jax.vmap(kernel, in_axes=in_axes)(logits, bias, targets)
            for n in range(3):
                want = kernel(logits[n], bias if in_axes[1] is None else bias[n], targets[n])
                jax.tree.map(lambda a, b: np.testing.assert_allclose(a[n], b, rtol=1e-6, atol=1e-7), got, want)


def test_other_dtypes_and_the_switch_use_the_xla_loop(monkeypatch, x64):
    params64 = jax.tree.map(lambda a: a.astype(jnp.float64), lstm.init(jax.random.key(0), 4, 8))
    carry = jax.tree.map(lambda a: a.astype(jnp.float64), lstm.initial_state(8, (2,)))
    jaxpr = jax.make_jaxpr(lambda p, c: fused_scan(lstm, p, c, jnp.ones((2, 3, 4), p.W.dtype)))(params64, carry)
    assert "rnn_jax_lstm" not in str(jaxpr)
    # bf16 parameters keep a float32 state: the native loop runs, its operands in float32
    params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params64)
    jaxpr = jax.make_jaxpr(lambda p: fused_scan(lstm, p, lstm.initial_state(8, (2,)), jnp.ones((2, 3, 4))))(params16)
    assert ("rnn_jax_lstm" in str(jaxpr)) == kernels.available()
    monkeypatch.setenv("RNN_JAX_NATIVE", "0")
    assert not kernels.available()
    params = lstm.init(jax.random.key(0), 4, 8)
    jaxpr = jax.make_jaxpr(lambda p: fused_scan(lstm, p, lstm.initial_state(8, (2,)), jnp.ones((2, 3, 4))))(params)
    assert "rnn_jax_lstm" not in str(jaxpr)


def test_a_failing_compiler_is_reported(tmp_path):
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` command to stand in for a broken compiler")
    with pytest.raises(RuntimeError, match="compiling recurrent.cc, xent.cc"):
        kernels.build(compiler=false, out_dir=tmp_path)
    assert not list(tmp_path.glob("*.so"))  # nothing half-written is left to be loaded later


@needs_kernel
def stand_in_compiler(tmp_path):
    """A "compiler" that records each call and writes its `-o` target: the cache logic without a real build."""
    calls = tmp_path / "calls"
    script = tmp_path / "cxx"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nwhile [ "$1" != "-o" ]; do shift; done\necho built > "$2"\n')
    script.chmod(0o755)
    return str(script), calls


def test_build_is_cached_by_content(tmp_path, monkeypatch):
    compiler, calls = stand_in_compiler(tmp_path)
    first = kernels.build(compiler, out_dir=tmp_path / "cache")
    modified = first.stat().st_mtime_ns
    assert kernels.build(compiler, out_dir=tmp_path / "cache") == first and first.stat().st_mtime_ns == modified
    assert len(calls.read_text().splitlines()) == 1
    monkeypatch.setattr(kernels._build, "cpu_flags", lambda: "flags: another cpu")
    assert kernels.build(compiler, out_dir=tmp_path / "cache") != first  # another CPU: a library of its own
    assert len(calls.read_text().splitlines()) == 2


@needs_kernel
def test_kernel_rejects_mismatched_weights():
    projected, W, h0, c0, *_ = random_case(2, 2, 8)
    with pytest.raises(Exception, match="expected W of shape"):
        jax.block_until_ready(kernels.lstm_forward(projected, W[:, :4], h0, c0))


def xent_oracle(logits, bias, targets, d_nll):
    """lse, nll and the cotangents of (logits, bias), by autodiff of jax.nn.logsumexp."""
    def nll_fn(logits, bias):
        z = logits + bias
        lse = jax.nn.logsumexp(z, axis=-1)
        return lse - jnp.take_along_axis(z, targets[:, None], -1)[:, 0], lse

    (nll, lse), vjp = jax.vjp(nll_fn, logits, bias)
    return lse, nll, vjp((d_nll, jnp.zeros_like(lse)))


@needs_kernel
@pytest.mark.parametrize("rows, classes", [
    (1, 1),        # one class: loss 0, gradient 0
    (7, 37),       # K not a multiple of 16: masked last vector
    (33, 1000),    # more rows than row chunks, several chunks per thread
    (4, 10000),    # a Zaremba-sized vocabulary
])
def test_softmax_xent_equals_autodiff_of_logsumexp(rows, classes):
    keys = jax.random.split(jax.random.key(0), 4)
    logits = 3.0 * jax.random.normal(keys[0], (rows, classes))
    bias = jax.random.normal(keys[1], (classes,))
    targets = jax.random.randint(keys[2], (rows,), 0, classes).at[0].set(classes - 1)
    d_nll = jax.random.normal(keys[3], (rows,))
    lse, nll = kernels.softmax_xent_forward(logits, bias, targets)
    want_lse, want_nll, (want_dz, want_dc) = xent_oracle(logits, bias, targets, d_nll)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(nll, want_nll, rtol=1e-5, atol=1e-5)
    nll_too, d_unit = kernels.softmax_xent_value_and_grad(logits, bias, targets)
    np.testing.assert_allclose(nll_too, want_nll, rtol=1e-5, atol=1e-5)
    # The unit-cotangent gradient scaled by g per row is the logits' cotangent; its column sums the bias's.
    d_logits = d_nll[:, None] * d_unit
    np.testing.assert_allclose(d_logits, want_dz, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_logits.sum(0), want_dc, rtol=1e-4, atol=1e-6)


@needs_kernel
def test_softmax_xent_extremes():
    """Huge and -inf logits give the reference's finite loss and zero probabilities; a NaN logit or a target
    outside [0, K) poisons its own row only (the train step's non-finite guard relies on it)."""
    classes = 40
    logits = jnp.zeros((5, classes))
    logits = logits.at[0, 3].set(1e4).at[1, :39].set(-jnp.inf).at[2, 7].set(jnp.nan).at[4, 0].set(-200.0)
    targets = jnp.array([3, 39, 0, 0, 1])
    bias = jnp.zeros(classes)
    lse, nll = kernels.softmax_xent_forward(logits, bias, targets)
    _, d_logits = kernels.softmax_xent_value_and_grad(logits, bias, targets)
    np.testing.assert_allclose(nll[:2], [0.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(d_logits[0], jnp.zeros(classes))
    np.testing.assert_array_equal(d_logits[1], jnp.zeros(classes))
    assert bool(jnp.isnan(nll[2])) and bool(jnp.isnan(d_logits[2]).all())
    bad_lse, bad_nll = kernels.softmax_xent_forward(logits, bias, jnp.array([3, 39, 0, classes, -1]))
    assert bool(jnp.isnan(bad_nll[3:]).all()) and bool(jnp.isfinite(bad_nll[:2]).all())
    bad_nll_too, bad_d = kernels.softmax_xent_value_and_grad(logits, bias, jnp.array([3, 39, 0, classes, -1]))
    assert bool(jnp.isnan(bad_nll_too[3:]).all()) and bool(jnp.isnan(bad_d[3:]).all())
    np.testing.assert_array_equal(bad_d[:2], d_logits[:2])
    want_lse, want_nll, (want_dz, _) = xent_oracle(logits[3:], bias, targets[3:], jnp.ones(2))
    np.testing.assert_allclose(nll[3:], want_nll, rtol=1e-6)
    assert float(d_logits[4, 0]) == 0.0 and float(want_dz[1, 0]) < 1e-30  # exp(-200) underflows to 0 in both


@needs_kernel
def test_softmax_xent_value_and_grad_leaves_logits_that_are_still_read_intact():
    """The gradient is written over the logits only when XLA can donate them; a caller still reading them gets
    them unchanged (XLA copies first), inside jit and outside."""
    logits = jax.random.normal(jax.random.key(0), (6, 50))
    targets = jnp.arange(6)
    kept = np.asarray(logits)

    @jax.jit
    def both(logits):
        return kernels.softmax_xent_value_and_grad(logits, jnp.zeros(50), targets)[1], logits * 1.0

    d_logits, after = both(logits)
    np.testing.assert_array_equal(after, kept)
    np.testing.assert_array_equal(logits, kept)
    want = jax.nn.softmax(logits) - jax.nn.one_hot(targets, 50)
    np.testing.assert_allclose(d_logits, want, rtol=1e-5, atol=1e-7)


@needs_kernel
def test_softmax_xent_rejects_mismatched_shapes():
    with pytest.raises(Exception, match=r"expected logits \(N, K\), bias \(K,\), targets \(N,\)"):
        jax.block_until_ready(kernels.softmax_xent_forward(jnp.zeros((4, 8)), jnp.zeros(7), jnp.zeros(4, jnp.int32)))
    with pytest.raises(Exception, match=r"got bias \(8,\), targets \(3,\)"):
        jax.block_until_ready(kernels.softmax_xent_value_and_grad(jnp.zeros((4, 8)), jnp.zeros(8),
                                                                  jnp.zeros(3, jnp.int32)))


def test_row_panels_layout_and_round_trip():
    """Entry (n, k) of group p = n // 16 (width w) sits at flat offset 16 p K + k w + n mod 16."""
    for rows, classes in [(0, 3), (5, 3), (16, 7), (37, 11)]:
        x = np.arange(rows * classes, dtype=np.float32).reshape(rows, classes)
        panels = np.asarray(kernels.rows_to_panels(jnp.asarray(x))).reshape(-1)
        for n in range(rows):
            group, width = n // 16, min(16, rows - n // 16 * 16)
            for k in range(classes):
                assert panels[16 * group * classes + k * width + n % 16] == x[n, k]
        np.testing.assert_array_equal(kernels.panels_to_rows(kernels.rows_to_panels(jnp.asarray(x))), x)


@needs_kernel
@pytest.mark.parametrize("rows, classes, hidden", [
    (1, 1, 1), (5, 3, 0), (7, 37, 5), (16, 16, 16), (37, 100, 20), (33, 1000, 256), (40, 10000, 200)])
def test_output_layer_forward_equals_xla_logits_and_the_row_major_kernel(rows, classes, hidden):
    """Loss and gradient of h V^T + c as the row-major kernel gives them for XLA's logits (to the products'
    rounding), only laid out in row panels; a target outside [0, K) still poisons its own row only."""
    keys = jax.random.split(jax.random.key(0), 4)
    h = jax.random.normal(keys[0], (rows, hidden))
    V = jax.random.normal(keys[1], (classes, hidden)) / max(1.0, hidden ** 0.5)
    bias = jax.random.normal(keys[2], (classes,))
    targets = jax.random.randint(keys[3], (rows,), 0, classes).at[-1].set(classes)
    want_nll, want_d = kernels.softmax_xent_value_and_grad(h @ V.T, bias, targets)
    nll, d_panels = jax.jit(kernels.output_layer_forward)(h, V, bias, targets)
    d = kernels.panels_to_rows(d_panels)
    np.testing.assert_allclose(nll, want_nll, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-6)
    assert bool(jnp.isnan(nll[-1])) and bool(jnp.isnan(d[-1]).all())
    if rows > 1:
        assert bool(jnp.isfinite(d[:-1]).all()) and bool(jnp.isfinite(nll[:-1]).all())


@needs_kernel
@pytest.mark.parametrize("rows, classes, hidden", [
    (1, 1, 1),
    (5, 3, 1),          # no full row panel
    (16, 17, 16),       # one full panel; H a multiple of 16 (the bias gradient gets a column panel of its own)
    (37, 100, 20),      # a partial last panel; H mod 16 = 4
    (33, 1000, 256),
    (400, 2000, 200),   # zaremba_small's rows and H; several depth blocks of the dh product
])
def test_output_layer_backward_equals_float64_products(rows, classes, hidden):
    keys = jax.random.split(jax.random.key(1), 5)
    logits = 2.0 * jax.random.normal(keys[0], (rows, classes))
    targets = jax.random.randint(keys[1], (rows,), 0, classes)
    h = jax.random.normal(keys[2], (rows, hidden))
    g = jax.random.uniform(keys[3], (rows,), minval=-1.0, maxval=2.0)
    V = jax.random.normal(keys[4], (classes, hidden))
    d_panels = kernels.rows_to_panels(kernels.softmax_xent_value_and_grad(logits, jnp.zeros(classes), targets)[1])
    d_h, d_V, d_c = jax.jit(kernels.output_layer_backward)(d_panels, h, g, V)
    D, h64, g64, V64 = (np.asarray(a, np.float64) for a in (kernels.panels_to_rows(d_panels), h, g, V))
    for got, want in ((d_h, g64[:, None] * (D @ V64)), (d_V, D.T @ (g64[:, None] * h64)), (d_c, g64 @ D)):
        assert got.shape == want.shape and got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * max(1.0, np.abs(want).max()))


@needs_kernel
def test_output_layer_kernels_under_vmap():
    """Mapped, the pair runs its XLA form (the panel layout depends on the rows per call, and dV sums over rows):
    per-example results equal one call per example, with shared and with mapped (ensemble) weights."""
    examples, rows, classes, hidden = 3, 21, 50, 18
    keys = jax.random.split(jax.random.key(2), 5)
    targets = jax.random.randint(keys[1], (examples, rows), 0, classes)
    h = jax.random.normal(keys[2], (examples, rows, hidden))
    g = jax.random.normal(keys[3], (examples, rows))
    Vs = jax.random.normal(keys[4], (examples, classes, hidden))

    bias = jax.random.normal(keys[0], (classes,))

    def pair(targets, h, g, V):
        nll, d_panels = kernels.output_layer_forward(h, V, bias, targets)
        return (nll,) + kernels.output_layer_backward(d_panels, h, g, V)

    for V_axis in (None, 0):
        V = Vs[0] if V_axis is None else Vs
        got = jax.jit(jax.vmap(pair, in_axes=(0, 0, 0, V_axis)))(targets, h, g, V)
        for n in range(examples):
            want = pair(targets[n], h[n], g[n], V if V_axis is None else V[n])
            for a, b in zip(got, want):
                np.testing.assert_allclose(a[n], b, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_output_layer_kernels_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"expected h \(N, H\), V \(K, H\), bias \(K,\) float32 and targets \(N,\) "
                                         r"integer; got h \(4, 8\) float32, V \(7, 8\) float32, bias \(6,\)"):
        kernels.output_layer_forward(jnp.zeros((4, 8)), jnp.zeros((7, 8)), jnp.zeros(6), jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match=r"targets \(4,\) float32"):
        kernels.output_layer_forward(jnp.zeros((4, 8)), jnp.zeros((7, 8)), jnp.zeros(7), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"expected d_panels \(N, K\), h \(N, H\), g \(N,\), V \(K, H\), all "
                                         r"float32; got .*V \(8, 6\) float32"):
        kernels.output_layer_backward(jnp.zeros((4, 8)), jnp.zeros((4, 5)), jnp.zeros(4), jnp.zeros((8, 6)))


@needs_kernel
def test_empty_sequences_pass_the_final_cotangents_through():
    """T = 0 (fused_scan never calls the kernels then, but they are public): the backward returns the final
    cotangents unchanged and reads no step."""
    _, W, h0, c0, _, d_h_final, d_c_final = random_case(1, 3, 20)
    empty = jnp.zeros((0, 3, 20))
    acts = jnp.zeros((0, 3, 80))
    _, d_h0, d_c0 = kernels.lstm_backward(W, acts, empty, c0, empty, d_h_final, d_c_final)
    np.testing.assert_array_equal(d_h0, d_h_final)
    np.testing.assert_array_equal(d_c0, d_c_final)
    W_gru = W[:60]
    _, _, d_h0 = kernels.gru_backward(W_gru, acts, empty, h0, empty, d_h_final)
    np.testing.assert_array_equal(d_h0, d_h_final)


@needs_kernel
@pytest.mark.parametrize("classes", [20, 33])
def test_xent_rows_with_a_partial_last_vector_are_finite_and_exact(classes):
    # The tail lanes past K are filled with -inf; exp must give 0 there on every instruction set.
    logits = jax.random.normal(jax.random.key(1), (3, classes))
    targets = jnp.array([0, classes - 1, 5])
    _, nll = kernels.softmax_xent_forward(logits, jnp.zeros(classes), targets)
    want = jax.nn.logsumexp(logits, -1) - logits[jnp.arange(3), targets]
    np.testing.assert_allclose(nll, want, rtol=1e-5)


def test_the_native_policy(monkeypatch):
    from rnn_jax.kernels import _build, policy

    monkeypatch.setenv("RNN_JAX_NATIVE", "off")
    assert policy.mode() == "off" and not kernels.available()
    with kernels.native_mode("auto"):
        assert policy.mode() == "auto"
    monkeypatch.setenv("RNN_JAX_NATIVE", "sometimes")
    with pytest.raises(ValueError, match="RNN_JAX_NATIVE"):
        policy.mode()
    with pytest.raises(ValueError, match="native mode must be one of"):
        with kernels.native_mode("never"):
            pass
    monkeypatch.setattr(_build, "loaded", lambda: True)
    for flags, auto in (("flags : fpu avx2 fma", False), ("flags : fpu avx2 fma avx512f avx512_bf16", True)):
        monkeypatch.setattr(_build, "cpu_flags", lambda flags=flags: flags)
        with kernels.native_mode("auto"):  # auto: only where the kernels beat XLA's form (AVX-512)
            assert kernels.available(jnp.float32) is auto
        with kernels.native_mode("require"):  # require: on every CPU
            assert kernels.available(jnp.float32)
    monkeypatch.setenv("RNN_JAX_NATIVE", "require")
    monkeypatch.setattr(_build, "loaded", lambda: False)
    monkeypatch.setitem(_build._failure, "error", "RuntimeError: no C++ compiler found")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found"):
        kernels.available(jnp.float32)
    assert not kernels.available(jnp.float32, native=False)


def test_kernels_info_command_runs():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "rnn_jax.kernels", "info"], capture_output=True, text=True)
    assert "mode:" in result.stdout and "cache:" in result.stdout and "status:" in result.stdout
    assert "bf16:" in result.stdout

