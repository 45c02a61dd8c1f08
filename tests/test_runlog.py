"""RunLog: events, truncation on resume, the per-epoch CSV and the plot."""

from rnn_jax.runlog import RunLog


def test_events_csv_truncate_and_plot(tmp_path):
    log = RunLog(tmp_path)
    for windows in (10, 20):
        log.write({"kind": "train", "windows": windows, "wall_s": windows / 10, "train_nll": 3.0 - windows / 20})
    log.write({"kind": "epoch", "epoch": 1, "windows": 20, "wall_s": 2.0, "train_nll": 2.0, "train_perplexity": 7.4,
               "valid_nll": 2.1, "valid_perplexity": 8.2})
    log.write({"kind": "train", "windows": 30, "wall_s": 3.0, "train_nll": 1.9})
    log.truncate_after(20)
    assert [e["windows"] for e in log.events()] == [10, 20, 20]
    lines = log.write_csv().read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("1,20,")
    png = log.plot("title")
    assert png.read_bytes()[:4] == b"\x89PNG"
