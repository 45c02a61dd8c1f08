"""Training: schedules, the jitted step, non-finite guard, runs on disk, exact resume, the learning floor."""

import dataclasses
import json
import math
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax import data as data_lib
from rnn_jax.checkpoints import Checkpointer
from rnn_jax.lm import LanguageModel, LMConfig
from rnn_jax.training import (LineProgress, OptimConfig, TrainConfig, TrainState, config_from_dict, config_to_dict,
                              generate, learning_rate_schedule, make_optimizer, make_train_step, progress_bar,
                              sparse_embedding_pays, sum_rows_by_id, train)


@pytest.fixture
def text_file(tmp_path):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    lines = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(800)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def small_config(path, **overrides):
    base = TrainConfig(
        model=LMConfig(vocab_size=8, embed_size=6, hidden_size=12, num_layers=2, use_bias=True, output_bias=True,
                       dropout=0.1),
        data=data_lib.DataConfig(source=str(path), level="char", max_vocab=None),
        optim=OptimConfig(name="adam", learning_rate=1e-2, clip_norm=1.0),
        batch_size=4, num_steps=10, epochs=2, max_windows_per_epoch=12, log_every=4, checkpoint_every=5,
        keep_checkpoints=50, sample_length=20, sample_prompt="al")
    return dataclasses.replace(base, **overrides)


def test_zaremba_schedule_decays_after_k_epochs():
    optim = OptimConfig(name="sgd", learning_rate=1.0, schedule="zaremba", decay_after=4, decay=0.5)
    schedule = learning_rate_schedule(optim, steps_per_epoch=10, total_steps=130)
    rates = [float(schedule(epoch * 10 + 3)) for epoch in range(7)]
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]


def test_warmup_then_cosine():
    optim = OptimConfig(name="adam", learning_rate=1e-3, schedule="cosine", warmup_steps=10, final_fraction=0.1)
    schedule = learning_rate_schedule(optim, steps_per_epoch=10, total_steps=110)
    assert float(schedule(0)) == 0.0 and math.isclose(float(schedule(5)), 5e-4, rel_tol=1e-5)
    assert math.isclose(float(schedule(10)), 1e-3, rel_tol=1e-5)
    assert math.isclose(float(schedule(110)), 1e-4, rel_tol=1e-4)


def test_config_validation_and_roundtrip():
    config = TrainConfig()
    assert config_from_dict(TrainConfig, json.loads(json.dumps(config_to_dict(config)))) == config
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="hidden_size must be a positive int; got -3"):
        LMConfig(hidden_size=-3)
    with pytest.raises(ValueError, match="OptimConfig.name must be"):
        OptimConfig(name="lion")
    with pytest.raises(ValueError, match="has no field"):
        config_from_dict(TrainConfig, {"batchsize": 3})


def make_state(model, optimizer, seed=0):
    params = model.init(jax.random.PRNGKey(seed))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      key=jax.random.PRNGKey(seed + 1))


def test_train_step_traces_once_over_carried_windows():
    model = LanguageModel(LMConfig(vocab_size=9, embed_size=4, hidden_size=8, dropout=0.2, num_layers=2))
    optimizer = make_optimizer(OptimConfig(name="sgd", learning_rate=0.5), 10, 100)
    step = jax.jit(chex.assert_max_traces(make_train_step(model, optimizer, "token_mean"), n=1))
    state, carry = make_state(model, optimizer), model.initial_state(3)
    rows = data_lib.batchify(np.arange(400) % 9, 3)
    for index in range(6):
        inputs, targets = data_lib.window(rows, index, 7)
        state, carry, metrics = step(state, carry, jnp.asarray(inputs), jnp.asarray(targets))
        assert bool(metrics["finite"])
    assert int(state.step) == 6


SGD_CLIP = OptimConfig(name="sgd", learning_rate=1.0, clip_norm=0.5)
ADAM = OptimConfig(name="adam", learning_rate=0.01)


@pytest.mark.parametrize("cell, options, optim", [
    pytest.param("lstm", {}, SGD_CLIP, id="lstm-sgd_clip", marks=pytest.mark.slow),
    pytest.param("gru", {"gru_reset_after": True}, ADAM, id="gru_reset_after-adam"),
    pytest.param("elman", {"dropout": 0.3}, SGD_CLIP, id="elman-dropout-sgd_clip", marks=pytest.mark.slow),
    pytest.param("lstm", {"use_bias": True, "num_layers": 2, "dropout": 0.2}, ADAM, id="lstm-2layers-bias-dropout-adam"),
    pytest.param("gru", {}, SGD_CLIP, id="gru_notes_form_falls_back-sgd_clip", marks=pytest.mark.slow),
    pytest.param("gru", {"gru_reset_after": True, "use_bias": True}, SGD_CLIP, id="gru_reset_after-bias-sgd_clip",
                 marks=pytest.mark.slow),
])
def test_default_fused_train_step_equals_the_reference_step(cell, options, optim):
    """The default (fused) step against the same model run by the plain `scan` of the cell's step, three steps."""
    config = LMConfig(vocab_size=13, embed_size=6, hidden_size=7, cell=cell, **options)
    assert config.runner == "fused"
    models = [LanguageModel(config), LanguageModel(dataclasses.replace(config, runner="scan"))]
    optimizer = make_optimizer(optim, 10, 100)
    rows = data_lib.batchify(np.arange(300) * 7 % 13, 4)
    results = []
    for model, native in zip(models, (True, False)):  # the reference step also takes XLA's softmax cross-entropy
        state, carry = make_state(model, optimizer), model.initial_state(4)
        step = jax.jit(make_train_step(model, optimizer, "sum_time_mean_batch", native=native))
        for index in range(3):
            inputs, targets = data_lib.window(rows, index, 5)
            state, carry, metrics = step(state, carry, jnp.asarray(inputs), jnp.asarray(targets))
        results.append((state, carry, metrics))
    chex.assert_trees_all_close(results[0], results[1], rtol=2e-5, atol=2e-6)


def test_sum_rows_by_id_gives_the_dense_gradient_of_a_lookup():
    """Against numpy's unbuffered scatter-add into zeros: repeated ids summed, padding slots dropped."""
    rng = np.random.default_rng(0)
    for n, vocab in ((1, 1), (7, 3), (40, 100), (64, 5)):
        ids = rng.integers(0, vocab, n).astype(np.int32)
        rows = rng.normal(size=(n, 4)).astype(np.float32)
        unique_ids, sums = jax.jit(sum_rows_by_id, static_argnums=2)(jnp.asarray(ids), jnp.asarray(rows), vocab)
        distinct = np.unique(ids)
        np.testing.assert_array_equal(unique_ids[:len(distinct)], distinct)
        np.testing.assert_array_equal(unique_ids[len(distinct):], vocab)
        np.testing.assert_array_equal(sums[len(distinct):], 0.0)
        dense = np.zeros((vocab, 4), np.float32)
        np.add.at(dense, ids, rows)
        np.testing.assert_allclose(sums[:len(distinct)], dense[distinct], rtol=1e-6, atol=1e-6)
        rebuilt = jnp.zeros((vocab, 4)).at[unique_ids].add(sums, mode="drop")
        np.testing.assert_allclose(rebuilt, dense, rtol=1e-6, atol=1e-6)


SGD_TIGHT_CLIP = OptimConfig(name="sgd", learning_rate=1000.0, clip_norm=1e-5)  # every step clipped


@pytest.mark.parametrize("cell, options, optim", [
    pytest.param("lstm", {"num_layers": 2, "dropout": 0.2}, SGD_TIGHT_CLIP, id="lstm-2layers-dropout-sgd_clip"),
    pytest.param("gru", {"gru_reset_after": True, "use_bias": True},
                 OptimConfig(name="sgd", learning_rate=0.5, clip_norm=None, schedule="cosine"), id="gru-sgd_cosine"),
    pytest.param("elman", {}, SGD_TIGHT_CLIP, id="elman-sgd_clip"),
    pytest.param("lstm", {"embed_dropout": 0.1, "weight_drop": 0.3, "ar_alpha": 1.0, "tar_beta": 1.0},
                 SGD_TIGHT_CLIP, id="lstm-awd_regularisers-sgd_clip"),
])
def test_sparse_embedding_step_equals_the_dense_step(cell, options, optim):
    """Four SGD steps (clipping active, repeated ids, rows the batch never uses): the same parameters, carry and
    metrics, and the unused rows of the table bit for bit untouched."""
    model = LanguageModel(LMConfig(vocab_size=23, embed_size=6, hidden_size=7, cell=cell, **options))
    optimizer = make_optimizer(optim, 10, 100)
    rows = data_lib.batchify(np.arange(300) * 7 % 11, 4)  # ids 0-10 of 23: rows 11-22 never used
    results = []
    for sparse in (False, True):
        state, carry = make_state(model, optimizer), model.initial_state(4)
        step = jax.jit(make_train_step(model, optimizer, "token_mean", sparse_embedding=sparse), donate_argnums=(0, 1))
        for index in range(4):
            inputs, targets = data_lib.window(rows, index, 5)
            state, carry, metrics = step(state, carry, jnp.asarray(inputs), jnp.asarray(targets))
            assert bool(metrics["finite"])
        results.append((state, carry, metrics))
    if optim.clip_norm:
        assert float(results[1][2]["grad_norm"]) > optim.clip_norm  # the clip scales the update
    initial = make_state(model, optimizer).params
    moved = [jax.tree.map(jnp.subtract, state.params, initial) for state, _, _ in results]
    assert float(optax.tree.norm(moved[0])) > 1e-3
    chex.assert_trees_all_close(moved[0], moved[1], rtol=1e-5, atol=1e-8)
    chex.assert_trees_all_close(results[0][1:], results[1][1:], rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(results[1][0].params.embedding[11:], initial.embedding[11:])
    assert np.all(np.any(np.asarray(moved[1].embedding[:11]) != 0, axis=1))


def test_sparse_embedding_refuses_what_it_cannot_do_exactly():
    model = LanguageModel(LMConfig(vocab_size=9, embed_size=4, hidden_size=8))
    inputs = jnp.array([[1, 3, 2], [0, 1, 2]])
    for optimizer in (make_optimizer(ADAM, 10, 100), optax.sgd(0.1, momentum=0.9)):
        step = jax.jit(make_train_step(model, optimizer, "token_mean", sparse_embedding=True))
        with pytest.raises(ValueError, match="per-parameter state"):
            step(make_state(model, optimizer), model.initial_state(2), inputs, inputs)
    decayed = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1))
    with pytest.raises(ValueError):  # reads the parameters, which the sparse step does not pass
        jax.jit(make_train_step(model, decayed, "token_mean", sparse_embedding=True))(
            make_state(model, decayed), model.initial_state(2), inputs, inputs)
    tied = LanguageModel(LMConfig(vocab_size=9, embed_size=8, hidden_size=8, tie_weights=True))
    with pytest.raises(ValueError, match="untied"):
        make_train_step(tied, make_optimizer(SGD_CLIP, 10, 100), "token_mean", sparse_embedding=True)


def test_sparse_embedding_pays_only_where_exact_and_cheaper():
    small = LMConfig(vocab_size=10000, embed_size=8, hidden_size=8)
    sgd = OptimConfig(name="sgd", clip_norm=5.0, schedule="zaremba", decay_after=4, decay=0.5)
    assert sparse_embedding_pays(sgd, small, 20 * 35)
    assert not sparse_embedding_pays(OptimConfig(name="adam"), small, 20 * 35)
    assert not sparse_embedding_pays(sgd, dataclasses.replace(small, tie_weights=True), 20 * 35)
    assert not sparse_embedding_pays(sgd, small, 20 * 35, devices=2)
    assert not sparse_embedding_pays(sgd, dataclasses.replace(small, vocab_size=1000), 16 * 512)  # `long`


def test_train_takes_the_sparse_embedding_step_where_it_pays_with_the_same_results(text_file, tmp_path, monkeypatch):
    from rnn_jax.train import loop as training
    config = small_config(text_file, optim=OptimConfig(name="sgd", learning_rate=0.5, clip_norm=0.1), batch_size=2,
                          num_steps=4, epochs=2, max_windows_per_epoch=8, checkpoint_every=0, sample_length=0)
    used, build = [], training.make_train_step
    monkeypatch.setattr(training, "make_train_step",
                        lambda *a, **k: used.append(k["sparse_embedding"]) or build(*a, **k))
    sparse = train(config, tmp_path / "sparse", progress=False, log=lambda _: None)
    monkeypatch.setattr(training, "sparse_embedding_pays", lambda *a: False)
    dense = train(config, tmp_path / "dense", progress=False, log=lambda _: None)
    assert used == [True, False] and 2 * 4 < sparse.vocab.size
    for a, b in zip(sparse.history, dense.history):
        assert a["valid_nll"] == pytest.approx(b["valid_nll"], rel=1e-5)
    assert sparse.test["nll"] == pytest.approx(dense.test["nll"], rel=1e-5)


@pytest.mark.parametrize("sparse", [False, True])
def test_non_finite_step_is_not_applied(sparse):
    model = LanguageModel(LMConfig(vocab_size=9, embed_size=4, hidden_size=8))
    optim = OptimConfig(name="sgd", learning_rate=0.1) if sparse else OptimConfig(name="adam", learning_rate=0.1)
    optimizer = make_optimizer(optim, 10, 100)
    state = make_state(model, optimizer)
    poisoned = state._replace(params=state.params._replace(embedding=state.params.embedding.at[3].set(jnp.nan)))
    carry = model.initial_state(2)
    inputs = jnp.array([[1, 3, 2], [0, 1, 2]])
    new_state, new_carry, metrics = jax.jit(make_train_step(model, optimizer, "token_mean", sparse_embedding=sparse))(
        poisoned, carry, inputs, inputs)
    assert not bool(metrics["finite"])
    chex.assert_trees_all_equal(new_state.params, poisoned.params)
    chex.assert_trees_all_equal(new_state.opt_state, poisoned.opt_state)
    chex.assert_trees_all_equal(new_carry, carry)
    assert int(new_state.step) == 0


def test_run_writes_everything(text_file, tmp_path):
    run_dir = tmp_path / "run"
    lines = []
    result = train(small_config(text_file), run_dir, progress=False, log=lines.append)
    for name in ("config.json", "vocab.json", "metrics.jsonl", "metrics.csv", "perplexity.png", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "perplexity.png").stat().st_size > 10_000
    assert len(result.history) == 2 and any(line.startswith("epoch 2/2") for line in lines)
    assert result.history[1]["valid_perplexity"] < result.history[0]["valid_perplexity"] < result.vocab.size + 1
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,windows,step") and len(csv_lines) == 3
    assert result.sample.startswith("al") and len(result.sample) == 22
    assert json.loads((run_dir / "config.json").read_text())["model"]["vocab_size"] == result.vocab.size
    assert result.train_step.__wrapped__._cache_size() == 1  # the jitted step compiled once for the whole run
    with pytest.raises(FileExistsError, match="already holds a run with checkpoints"):
        train(small_config(text_file), run_dir, progress=False, log=lines.append)


def test_progress_without_a_terminal_is_whole_lines_at_most_every_interval(capsys):
    """Redirected stderr (a log file, CI) gets plain lines, not a bar's carriage returns: one per interval of a
    fake clock and one on close, each with the latest postfix."""
    now = [0.0]
    stream_lines = []

    class Stream:
        def write(self, text):
            stream_lines.append(text)

        def flush(self):
            pass

    report = LineProgress(100, 10, "epoch 1/2", stream=Stream(), interval=30.0, clock=lambda: now[0])
    for second in range(1, 61):
        now[0] = float(second)
        report.set_postfix(loss=f"{1 / second:.3f}")
        report.update(1)
    report.close()
    lines = "".join(stream_lines).splitlines()
    assert lines == ["epoch 1/2: 40/100 win  loss=0.033", "epoch 1/2: 70/100 win  loss=0.017",
                     "epoch 1/2: 70/100 win  loss=0.017"]
    assert "\r" not in "".join(stream_lines)
    # Under pytest stderr is captured, not a terminal: train()'s progress takes the line form.
    assert isinstance(progress_bar(5, 0, "epoch 1/1"), LineProgress)
    assert not isinstance(progress_bar(5, 0, "epoch 1/1", enabled=False), LineProgress)


def final_checkpoint(run_dir, config):
    model = LanguageModel(config.model)
    optimizer = make_optimizer(config.optim, 12, 24)
    template = (make_state(model, optimizer), model.initial_state(config.batch_size))
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=50)
    tree, record, step = checkpointer.restore_latest(template)
    checkpointer.close()
    return tree, record, step


# mid-epoch 1 (between two log lines), end of epoch 1, mid-epoch 2 (the last two in `-m slow`)
@pytest.mark.parametrize("cut_after", [5, pytest.param(12, marks=pytest.mark.slow),
                                       pytest.param(15, marks=pytest.mark.slow)])
def test_resumed_run_equals_uninterrupted_run(text_file, tmp_path, cut_after):
    config = small_config(text_file)
    full = train(config, tmp_path / "full", progress=False, log=lambda _: None)
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "full", partial)
    for step_dir in (partial / "checkpoints").iterdir():  # the run "died" right after checkpoint `cut_after`
        if step_dir.name.isdigit() and int(step_dir.name) > cut_after:
            shutil.rmtree(step_dir)
    for name in ("summary.json", "metrics.csv", "perplexity.png"):
        (partial / name).unlink()
    resumed = train(None, partial, resume=True, progress=False, log=lambda _: None)
    (full_tree, full_record, full_step), (resumed_tree, resumed_record, resumed_step) = (
        final_checkpoint(tmp_path / "full", full.config), final_checkpoint(partial, resumed.config))
    assert full_step == resumed_step == 24
    assert {k: v for k, v in full_record.items() if k not in ("elapsed", "epoch_seconds", "budget_seconds")} == \
        {k: v for k, v in resumed_record.items() if k not in ("elapsed", "epoch_seconds", "budget_seconds")}
    chex.assert_trees_all_equal(full_tree, resumed_tree)  # bit for bit: params, optimiser state, key, carry
    assert [e["valid_nll"] for e in full.history] == [e["valid_nll"] for e in resumed.history]
    assert [e["train_nll"] for e in full.history] == [e["train_nll"] for e in resumed.history]
    assert full.sample == resumed.sample and full.test == resumed.test
    timing = ("wall_s", "tokens_per_s")
    logged = [[{k: v for k, v in json.loads(line).items() if k not in timing}
               for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (tmp_path / "full", partial)]
    assert logged[0] == logged[1]  # every figure, running means of the training loss included


def test_resume_checks(text_file, tmp_path):
    config = small_config(text_file, epochs=1)
    with pytest.raises(FileNotFoundError, match="nothing does not exist"):
        train(None, tmp_path / "nothing", resume=True, progress=False)
    train(config, tmp_path / "run", progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match=r"differs from the one saved .*\(seed: saved 0, given 5\)"):
        train(dataclasses.replace(config, seed=5), tmp_path / "run", resume=True, progress=False)
    data_lib.Vocabulary(tokens=("a", "<unk>"), level="char").save(tmp_path / "run" / "vocab.json")
    with pytest.raises(data_lib.DataError, match="vocab.json has 2 entries but the checkpointed model has vocab_size"):
        train(None, tmp_path / "run", resume=True, progress=False)


def test_generate_is_seeded_and_greedy_is_argmax(text_file):
    corpus = data_lib.load_corpus(data_lib.DataConfig(source=str(text_file), level="char", max_vocab=None))
    model = LanguageModel(LMConfig(vocab_size=corpus.vocab.size, embed_size=4, hidden_size=8))
    params = model.init(jax.random.PRNGKey(0))
    a = generate(model, params, corpus.vocab, "ga", 15, temperature=1.0, key=jax.random.PRNGKey(3))
    assert a == generate(model, params, corpus.vocab, "ga", 15, temperature=1.0, key=jax.random.PRNGKey(3))
    greedy = generate(model, params, corpus.vocab, "ga", 3, temperature=0.0)
    ids = list(corpus.vocab.encode("ga"))
    for _ in range(3):
        logits, _ = model.apply(params, model.initial_state(1), jnp.asarray([ids]))
        ids.append(int(jnp.argmax(logits[0, -1])))
    assert greedy == corpus.vocab.detokenize(ids)


def markov_source(num_symbols=5, length=60_000, seed=0):
    """Text from a first-order Markov chain and its exact entropy rate (nats per symbol)."""
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.full(num_symbols, 0.5), size=num_symbols)
    eigenvalues, eigenvectors = np.linalg.eig(transition.T)
    stationary = np.real(eigenvectors[:, np.argmin(np.abs(eigenvalues - 1))])
    stationary /= stationary.sum()
    entropy_rate = -np.sum(stationary[:, None] * transition * np.log(transition))
    states = [0]
    cumulative = np.cumsum(transition, axis=1)
    for u in rng.random(length - 1):
        states.append(int(np.searchsorted(cumulative[states[-1]], u)))
    letters = "\nabcdefghi"  # the newline is one of the chain's symbols, so line splits add no entropy
    return "".join(letters[s] for s in states), float(entropy_rate)


def test_learns_a_markov_source_down_to_its_entropy_rate(tmp_path):
    text, entropy_rate = markov_source()
    path = tmp_path / "markov.txt"
    path.write_text(text)
    config = TrainConfig(
        model=LMConfig(vocab_size=8, embed_size=8, hidden_size=32, use_bias=True, output_bias=True),
        data=data_lib.DataConfig(source=str(path), level="char", max_vocab=None, split=(0.8, 0.1, 0.1)),
        optim=OptimConfig(name="adam", learning_rate=1e-2, clip_norm=1.0, schedule="cosine"),
        batch_size=32, num_steps=50, epochs=6, sample_length=0)
    result = train(config, tmp_path / "run", progress=False, log=lambda _: None)
    gap = result.test["nll"] - entropy_rate  # no model can beat the source's entropy rate (beyond sampling noise)
    print(f"Markov source: entropy rate {entropy_rate:.4f} nats/symbol, test NLL {result.test['nll']:.4f}, gap {gap:.4f}")
    assert -0.02 < gap < 0.03, f"test NLL {result.test['nll']:.4f}, entropy rate {entropy_rate:.4f}"


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse_embedding"])
def test_step_whose_updated_parameters_overflow_is_not_applied(sparse):
    """Finite loss and gradients, but an update that takes the parameters out of float32's range."""
    model = LanguageModel(LMConfig(vocab_size=9, embed_size=4, hidden_size=8))
    optimizer = make_optimizer(OptimConfig(name="sgd", learning_rate=1e37, clip_norm=None), 10, 100)
    state = make_state(model, optimizer)
    inputs = jnp.array([[1, 3, 2], [0, 1, 2]])
    new_state, _, metrics = jax.jit(make_train_step(model, optimizer, "token_mean", sparse_embedding=sparse))(
        state, model.initial_state(2), inputs, inputs)
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert not bool(metrics["finite"]) and int(new_state.step) == 0
    chex.assert_trees_all_equal(new_state.params, state.params)


def test_train_reads_step_metrics_only_at_log_lines_and_checkpoints(text_file, tmp_path, monkeypatch):
    """The loop dispatches steps without waiting for each: their metrics are read in one transfer per log line,
    mid-epoch checkpoint and epoch end, and the logged figures are those of reading every step."""
    from rnn_jax.train import loop

    reads, real_get = [], loop.jax.device_get

    def counting_get(tree):
        if isinstance(tree, list) and tree and isinstance(tree[0], dict) and "finite" in tree[0]:
            reads.append(len(tree))  # the loop's read of its pending steps' metrics
        return real_get(tree)

    monkeypatch.setattr(loop.jax, "device_get", counting_get)
    config = small_config(text_file, epochs=1, max_windows_per_epoch=12, log_every=4, checkpoint_every=0)
    result = train(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert reads == [4, 4, 4]  # windows 1-4, 5-8, 9-12: three reads, not twelve
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["windows"] for e in events if e["kind"] == "train"] == [4, 8, 12]
    assert result.history[0]["train_nll"] > 0


def test_nt_asgd_averages_the_iterates_after_its_non_monotone_trigger():
    from rnn_jax.train.optim import after_validation, evaluation_params

    optim = OptimConfig(name="nt_asgd", learning_rate=0.5, clip_norm=None, nonmono=2)
    optimizer = make_optimizer(optim, steps_per_epoch=10, total_steps=100)
    params = {"w": jnp.array([1.0, -2.0])}
    state = optimizer.init(params)
    grad = lambda p: {"w": 2 * p["w"] - 1.0}  # minimum at 0.5
    step = lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(*optimizer.update(grad(p), s, p))
    params, state = step(params, state)
    assert evaluation_params(params, state) is not params  # the same values until averaging starts
    np.testing.assert_array_equal(evaluation_params(params, state)["w"], params["w"])
    # Not triggered while the loss beats the best before the last `nonmono` validations, then triggered.
    assert not bool(after_validation(optim, state, [3.0, 2.0], 2.5)[0].averaging)
    assert not bool(after_validation(optim, state, [3.0, 2.0, 1.0], 2.5)[0].averaging)
    state = after_validation(optim, state, [3.0, 2.0, 1.0], 3.5)
    iterates = []
    for _ in range(3):
        params, state = step(params, state)
        iterates.append(params["w"])
    np.testing.assert_allclose(evaluation_params(params, state)["w"], np.mean(iterates, axis=0), rtol=1e-6)
    assert int(state[0].count) == 3


def test_sgd_weight_decay_is_pytorchs_l2_term():
    optimizer = make_optimizer(OptimConfig(name="sgd", learning_rate=0.1, clip_norm=None, weight_decay=0.01), 1, 1)
    params = {"w": jnp.array([2.0])}
    updates, _ = optimizer.update({"w": jnp.array([1.0])}, optimizer.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * (1.0 + 0.01 * 2.0), rtol=1e-6)
    assert not sparse_embedding_pays(OptimConfig(name="sgd", weight_decay=0.01), LMConfig(vocab_size=1000), 10)


def test_a_run_with_nt_asgd_evaluates_and_saves_the_average(text_file, tmp_path):
    config = small_config(text_file, optim=OptimConfig(name="nt_asgd", learning_rate=1.0, clip_norm=0.25, nonmono=0),
                          epochs=3, max_windows_per_epoch=4, checkpoint_every=0, sample_length=0)
    result = train(config, tmp_path / "run", progress=False)
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("epoch") == 3
    assert all(math.isfinite(e["valid_nll"]) for e in events if e["kind"] == "epoch")
    assert math.isfinite(result.valid["nll"]) and math.isfinite(result.test["nll"])


def test_a_sampled_window_length_scales_the_learning_rate(text_file, tmp_path):
    model = LanguageModel(LMConfig(vocab_size=8, embed_size=4, hidden_size=6))
    optimizer = make_optimizer(OptimConfig(name="sgd", learning_rate=0.5, clip_norm=None), 1, 1)
    params = model.init(jax.random.key(0))
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                       key=jax.random.PRNGKey(1))
    tokens = jax.random.randint(jax.random.key(2), (2, 6), 0, 8)
    steps = [make_train_step(model, optimizer, "token_mean", nominal_steps=nominal) for nominal in (None, 10)]
    new = [step(state, model.initial_state(2), tokens[:, :5], tokens[:, 1:])[0].params for step in steps]
    jax.tree.map(lambda plain, scaled, p: np.testing.assert_allclose(scaled - p, 0.5 * (plain - p), rtol=1e-5,
                                                                     atol=1e-7), new[0], new[1], params)
    config = small_config(text_file, sample_window_lengths=True, epochs=1, max_windows_per_epoch=2,
                          checkpoint_every=0, sample_length=0)
    assert math.isfinite(train(config, tmp_path / "run", progress=False).valid["nll"])
    with pytest.raises(ValueError, match="pass the optimiser as OptimConfig"):
        train(config, tmp_path / "other", progress=False, optimizer=optax.sgd(0.1))


def test_bf16_compute_trains_float32_parameters_and_checkpoints(text_file, tmp_path):
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = small_config(text_file)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, compute_dtype=dtype))
        results[dtype] = train(config, tmp_path / dtype, progress=False, log=lambda line: None)
    params = results["bfloat16"].params
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    (state, _), _, _ = final_checkpoint(tmp_path / "bfloat16", results["bfloat16"].config)
    assert {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    valid = {dtype: result.valid["nll"] for dtype, result in results.items()}
    assert valid["bfloat16"] < math.log(results["float32"].vocab.size)  # it learned
    assert abs(valid["bfloat16"] - valid["float32"]) < 0.02 * valid["float32"]
