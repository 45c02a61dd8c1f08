"""RunLog: events, truncation on resume, the per-epoch CSV, the plot and the TensorBoard mirror."""

import struct
import sys

import pytest

from rnn_jax.errors import ConfigError
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


def read_scalars(directory):
    """(tag, step, value) of every scalar in the TensorBoard event files under `directory` (TFRecord framing:
    8-byte length, 4-byte CRC, the Event proto, 4-byte CRC)."""
    from tensorboardX.proto import event_pb2

    scalars = []
    for path in sorted(directory.rglob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = struct.unpack("<Q", data[offset:offset + 8])[0]
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            scalars += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return scalars


def test_tensorboard_mirrors_the_numeric_fields(tmp_path):
    pytest.importorskip("tensorboardX")
    log = RunLog(tmp_path, tensorboard=True)
    log.write({"kind": "train", "windows": 10, "epoch": 1, "wall_s": 1.5, "train_nll": 3.25, "note": "text"})
    log.write({"kind": "epoch", "windows": 20, "epoch": 1, "valid_nll": 2.5, "diverged": False})
    log.close()
    scalars = read_scalars(tmp_path / "tensorboard")
    assert sorted(scalars) == [("epoch/valid_nll", 20, 2.5), ("train/train_nll", 10, 3.25), ("train/wall_s", 10, 1.5)]
    assert len(log.events()) == 2  # metrics.jsonl still has every event


def test_tensorboard_without_tensorboardx_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
    with pytest.raises(ConfigError, match=r"needs tensorboardX; install it with pip install 'rnn-jax-lab\[tensorboard\]'"):
        RunLog(tmp_path, tensorboard=True)
    assert RunLog(tmp_path, tensorboard=True, enabled=False).tensorboard is None  # non-primary hosts write nothing
