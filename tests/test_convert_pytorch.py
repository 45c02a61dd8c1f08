"""Parity with PyTorch: nn.LSTM / nn.GRU weights loaded into rnn_jax give the same outputs, both ways."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import LSTMPCell, Stacked, gru, lstm, run_layers, scan
from rnn_jax.bidirectional import Bidirectional, BidirectionalParams
from rnn_jax.convert import pytorch as convert

torch = pytest.importorskip("torch", reason="PyTorch (CPU) is in the test extra: pip install -e '.[test]'")

B, T, E, H = 3, 7, 5, 6
CELLS = {"LSTM": lstm, "GRU": gru}


def torch_module(mode, num_layers, bias, seed):
    torch.manual_seed(seed)
    module = getattr(torch.nn, mode)(E, H, num_layers=num_layers, bias=bias, batch_first=True)
    with torch.no_grad():  # widen the weights so the nonlinearities are exercised away from zero
        for p in module.parameters():
            p.mul_(3.0)
    return module


def run_torch(module, xs, carry):
    with torch.no_grad():
        out, state = module(torch.from_numpy(np.asarray(xs)), carry)
    return out.numpy(), state


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_torch_weights_reproduce_torch_outputs(mode, num_layers, bias):
    module = torch_module(mode, num_layers, bias, seed=num_layers)
    layer_params = convert.from_torch(module)
    cell = CELLS[mode]
    assert len(layer_params) == num_layers
    xs = np.random.default_rng(0).normal(size=(B, T, E)).astype(np.float32)
    h0 = np.random.default_rng(1).normal(size=(num_layers, B, H)).astype(np.float32) * 0.5
    c0 = np.random.default_rng(2).normal(size=(num_layers, B, H)).astype(np.float32) * 0.5
    if mode == "LSTM":
        want_out, (want_h, want_c) = run_torch(module, xs, (torch.from_numpy(h0), torch.from_numpy(c0)))
        carry = tuple(lstm.LSTMState(h=jnp.asarray(h0[k]), c=jnp.asarray(c0[k])) for k in range(num_layers))
    else:
        want_out, want_h = run_torch(module, xs, torch.from_numpy(h0))
        carry = tuple(gru.HiddenState(h=jnp.asarray(h0[k])) for k in range(num_layers))
    final, hs = scan(Stacked(cell, num_layers).step, layer_params, carry, jnp.asarray(xs))
    np.testing.assert_allclose(hs, want_out, atol=1e-5, rtol=1e-5)
    for k in range(num_layers):
        np.testing.assert_allclose(final[k].h, want_h[k].numpy(), atol=1e-5, rtol=1e-5)
        if mode == "LSTM":
            np.testing.assert_allclose(final[k].c, want_c[k].numpy(), atol=1e-5, rtol=1e-5)
    final2, hs2 = run_layers(cell, layer_params, carry, jnp.asarray(xs))  # the hoisted layer-wise path too
    np.testing.assert_allclose(hs2, want_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_rnn_jax_weights_load_into_torch(mode):
    cell = CELLS[mode]
    opts = {"reset_after": True} if mode == "GRU" else {"forget_bias": 1.0}
    layer_params = Stacked(cell, 2).init(jax.random.key(3), E, H, initializer="uniform", init_scale=0.8, **opts)
    module = convert.to_torch(layer_params, getattr(torch.nn, mode)(E, H, num_layers=2, batch_first=True))
    xs = np.random.default_rng(4).normal(size=(B, T, E)).astype(np.float32)
    want, _ = run_torch(module, xs, None)
    _, hs = scan(Stacked(cell, 2).step, layer_params, Stacked(cell, 2).initial_state(H, (B,)), jnp.asarray(xs))
    np.testing.assert_allclose(hs, want, atol=1e-5, rtol=1e-5)
    back = convert.from_torch(module)  # and back again: the same function, the same parameters
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), back, layer_params)


def test_proj_size_lstm_both_ways():
    """nn.LSTM(proj_size=P) is LSTMPCell(proj_size=P): outputs, final (h, c) and back again."""
    P = 4
    torch.manual_seed(5)
    module = torch.nn.LSTM(E, H, num_layers=2, proj_size=P, batch_first=True)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(3.0)
    layer_params = convert.from_torch(module)
    deep = Stacked(LSTMPCell(proj_size=P), 2)
    xs = np.random.default_rng(6).normal(size=(B, T, E)).astype(np.float32)
    h0 = np.random.default_rng(7).normal(size=(2, B, P)).astype(np.float32) * 0.5
    c0 = np.random.default_rng(8).normal(size=(2, B, H)).astype(np.float32) * 0.5
    want, (want_h, want_c) = run_torch(module, xs, (torch.from_numpy(h0), torch.from_numpy(c0)))
    carry = tuple(lstm.LSTMState(h=jnp.asarray(h0[k]), c=jnp.asarray(c0[k])) for k in range(2))
    final, hs = scan(deep.step, layer_params, carry, jnp.asarray(xs))
    np.testing.assert_allclose(hs, want, atol=1e-5, rtol=1e-5)
    for k in range(2):
        np.testing.assert_allclose(final[k].h, want_h[k].numpy(), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(final[k].c, want_c[k].numpy(), atol=1e-5, rtol=1e-5)
    ours = deep.init(jax.random.key(9), E, H, initializer="uniform", init_scale=0.8)
    loaded = convert.to_torch(ours, torch.nn.LSTM(E, H, num_layers=2, proj_size=P, batch_first=True))
    _, hs = scan(deep.step, ours, deep.initial_state(H, (B,)), jnp.asarray(xs))
    np.testing.assert_allclose(hs, run_torch(loaded, xs, None)[0], atol=1e-5, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), convert.from_torch(loaded), ours)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_bidirectional_both_ways(mode):
    """A bidirectional nn.LSTM/nn.GRU of two layers is two `Bidirectional(cell, merge="concat")` layers, the
    second reading the first's 2H outputs; h_n lists layer 0 forward, layer 0 backward, layer 1 forward, ..."""
    cell = CELLS[mode]
    torch.manual_seed(10)
    module = getattr(torch.nn, mode)(E, H, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(3.0)
    layer_params = convert.from_torch(module)
    assert all(isinstance(p, BidirectionalParams) for p in layer_params)
    bi = Bidirectional(cell, merge="concat")
    xs = np.random.default_rng(11).normal(size=(B, T, E)).astype(np.float32)

    def run_ours(params):
        hs, finals = jnp.asarray(xs), []
        for layer in params:
            final, hs = bi(layer, bi.initial_state(H, (B,)), hs)
            finals += [final.forward.h, final.backward.h]
        return hs, finals

    want, state = run_torch(module, xs, None)
    want_h = (state[0] if mode == "LSTM" else state).numpy()
    hs, finals = run_ours(layer_params)
    np.testing.assert_allclose(hs, want, atol=1e-5, rtol=1e-5)
    for got, expected in zip(finals, want_h):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    opts = {"reset_after": True} if mode == "GRU" else {}
    ours = (bi.init(jax.random.key(12), E, H, initializer="uniform", init_scale=0.8, **opts),
            bi.init(jax.random.key(13), 2 * H, H, initializer="uniform", init_scale=0.8, **opts))
    loaded = convert.to_torch(ours, getattr(torch.nn, mode)(E, H, num_layers=2, bidirectional=True, batch_first=True))
    np.testing.assert_allclose(run_ours(ours)[0], run_torch(loaded, xs, None)[0], atol=1e-5, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), convert.from_torch(loaded), ours)


def test_converter_refuses_what_has_no_equivalent():
    with pytest.raises(TypeError, match="notes' GRU .* has no PyTorch equivalent"):
        convert.to_torch_state_dict(gru.init(jax.random.key(0), E, H))
    with pytest.raises(TypeError, match="this torch.nn.GRU takes GRUResetAfterParams; got LSTMParams"):
        convert.to_torch(lstm.init(jax.random.key(0), E, H), torch.nn.GRU(E, H))
    with pytest.raises(TypeError, match="this torch.nn.LSTM takes LSTMPParams; got LSTMParams"):
        convert.to_torch(lstm.init(jax.random.key(0), E, H), torch.nn.LSTM(E, H, proj_size=2))
    with pytest.raises(TypeError, match="bidirectional torch.nn.LSTM takes BidirectionalParams of LSTMParams"):
        convert.to_torch(lstm.init(jax.random.key(0), E, H), torch.nn.LSTM(E, H, bidirectional=True))
    with pytest.raises(TypeError, match="need a torch.nn.GRU with bidirectional=True"):
        convert.to_torch(Bidirectional(gru).init(jax.random.key(0), E, H, reset_after=True), torch.nn.GRU(E, H))
    with pytest.raises(ValueError, match="is mode='GRU' right"):
        convert.from_torch_state_dict(torch.nn.LSTM(E, H).state_dict(), "GRU")
    with pytest.raises(ValueError, match="no 'weight_ih_l0'"):
        convert.from_torch_state_dict({}, "LSTM")
