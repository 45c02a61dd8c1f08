"""Parity with PyTorch: nn.LSTM / nn.GRU weights loaded into rnn_jax give the same outputs, both ways."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import Stacked, gru, lstm, run_layers, scan
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


def test_converter_refuses_what_has_no_equivalent():
    with pytest.raises(TypeError, match="notes' GRU .* has no PyTorch equivalent"):
        convert.to_torch_state_dict(gru.init(jax.random.key(0), E, H))
    with pytest.raises(ValueError, match="bidirectional"):
        convert.from_torch(torch.nn.LSTM(E, H, bidirectional=True))
    with pytest.raises(TypeError, match="a torch.nn.GRU takes GRUResetAfterParams; got LSTMParams"):
        convert.to_torch(lstm.init(jax.random.key(0), E, H), torch.nn.GRU(E, H))
    with pytest.raises(ValueError, match="is mode='GRU' right"):
        convert.from_torch_state_dict(torch.nn.LSTM(E, H).state_dict(), "GRU")
    with pytest.raises(ValueError, match="no 'weight_ih_l0'"):
        convert.from_torch_state_dict({}, "LSTM")
