"""The cell contract: a cell defined outside the package, with only init, initial_state and step and no field
named W, works with every runner, the stacks, both Flax skins, the language model and the command line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import usercells
from rnn_jax import Stacked, cells, fused_scan, hoisted_scan, run_layers, scan, unrolled
from rnn_jax import linen as rnn_linen
from rnn_jax import nnx as rnn_nnx
from rnn_jax.bidirectional import Bidirectional
from rnn_jax.cells import base
from rnn_jax.lm import LanguageModel, LMConfig

B, T, E, H = 2, 5, 3, 4
cell = usercells.diag_cell


def python_loop(params, carry, xs):
    """The oracle: the cell's equations written out step by step, batch-major xs (B, T, E)."""
    h, outs = carry["state"], []
    for t in range(xs.shape[1]):
        h = jnp.tanh(xs[:, t] @ params.A.T + params.d * h + params.c)
        outs.append(h)
    return {"state": h}, jnp.stack(outs, axis=1)


def setup():
    params = cell.init(jax.random.key(0), E, H)
    xs = jax.random.normal(jax.random.key(1), (B, T, E))
    return params, cell.initial_state(H, (B,)), xs


def test_the_user_cell_satisfies_the_contract():
    assert base.is_cell(cell) and isinstance(cell, base.Cell) and not base.can_hoist(cell)
    assert base.param_dtype(cell.init(jax.random.key(0), E, H)) == jnp.float32
    with pytest.raises(TypeError, match="lacks init, initial_state, step"):
        base.check_cell(object())


@pytest.mark.parametrize("runner", [scan, unrolled, hoisted_scan, fused_scan])
def test_every_runner_equals_a_python_loop_in_values_and_gradients(runner):
    params, carry, xs = setup()
    want_carry, want = python_loop(params, carry, xs)
    got_carry, got = runner(cell, params, carry, xs)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_carry["state"], want_carry["state"], rtol=1e-6, atol=1e-6)
    loss = lambda run: lambda p: run(p, carry, xs)[1].sum()
    np.testing.assert_allclose(jax.grad(loss(lambda *a: runner(cell, *a)))(params).d,
                               jax.grad(loss(python_loop))(params).d, rtol=1e-5, atol=1e-6)


def test_the_fallback_is_visible():
    params, carry, xs = setup()
    fused_scan(cell, params, carry, xs)
    assert ("DiagCell", "fused", "scan") in __import__("rnn_jax").runners.FALLBACKS


def test_stacks_and_bidirectional_run_it():
    params, carry, xs = setup()
    stack = Stacked(cell, 2)
    stack_params = stack.init(jax.random.key(2), E, H)
    carries = stack.initial_state(H, (B,))
    by_step = scan(stack, stack_params, carries, xs)[1]
    by_layer = run_layers(cell, stack_params, carries, xs, runner="fused")[1]
    np.testing.assert_allclose(by_step, by_layer, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(by_layer, python_loop(stack_params[1], carry,
                                                     python_loop(stack_params[0], carry, xs)[1])[1], rtol=1e-6)
    bi = Bidirectional(cell)
    bi_params = bi.init(jax.random.key(3), E, H)
    _, hs = bi(bi_params, bi.initial_state(H, (B,)), xs)
    backward = python_loop(bi_params.backward, carry, xs[:, ::-1])[1][:, ::-1]
    np.testing.assert_allclose(hs[..., H:], backward, rtol=1e-6, atol=1e-6)


def test_flax_linen_and_nnx_run_it():
    params, carry, xs = setup()
    layer = rnn_linen.RNN(cell=cell, hidden_size=H)
    variables = layer.init(jax.random.key(0), xs)
    _, hs = layer.apply(variables, xs)
    np.testing.assert_allclose(hs, python_loop(variables["params"]["cell"], carry, xs)[1], rtol=1e-6, atol=1e-6)
    module = rnn_nnx.RNN(cell, E, H, rngs=nnx.Rngs(0))
    _, hs = module(xs)
    np.testing.assert_allclose(hs, python_loop(rnn_nnx.params_of(module.cell), carry, xs)[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("how", ["object", "registered", "import path"])
def test_the_language_model_takes_it(how, monkeypatch):
    if how == "registered":
        monkeypatch.setattr(cells, "CELLS", dict(cells.CELLS))  # the registration ends with the test
        cells.register_cell("user_diag", cell, replace=True)
    name = {"object": "lstm", "registered": "user_diag", "import path": "usercells:diag_cell"}[how]
    config = LMConfig(vocab_size=11, embed_size=E, hidden_size=H, num_layers=2, cell=name)
    model = LanguageModel(config, cell=cell if how == "object" else None)
    params = model.init(jax.random.key(0))
    assert isinstance(params.rnn[0], usercells.DiagParams)
    logits, _ = model.apply(params, model.initial_state(B), jnp.zeros((B, T), jnp.int32))
    assert logits.shape == (B, T, 11) and bool(jnp.isfinite(logits).all())


def test_bad_cell_names_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown cell 'nope'"):
        cells.get_cell("nope")
    with pytest.raises(ValueError, match="cannot import module"):
        cells.get_cell("no_such_module:cell")
    with pytest.raises(ValueError, match="has no attribute"):
        cells.get_cell("usercells:missing")
    with pytest.raises(ValueError, match="does not apply to this cell"):
        LanguageModel(LMConfig(cell="indrnn", forget_bias=1.0)).init(jax.random.key(0))


def test_train_lm_trains_it_from_the_command_line(tmp_path, capsys):
    from experiments import train_lm

    path = tmp_path / "text.txt"
    path.write_text("".join(f"line {i % 13} of a small text\n" for i in range(300)))
    result = train_lm.main(["--data-source", str(path), "--data-max-vocab", "none", "--run-dir", str(tmp_path / "run"),
                            "--max-windows-per-epoch", "2", "--sample-length", "5", "--no-progress", "--epochs", "1",
                            "--model-cell", "usercells:diag_cell"])
    assert np.isfinite(result.valid["nll"]) and isinstance(result.params.rnn[0], usercells.DiagParams)
