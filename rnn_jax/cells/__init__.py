"""Recurrent cells and their registry.

Every cell follows the contract in `rnn_jax.cells.base` (`init`, `initial_state`, `step`, optional hoisting and
fused hooks). The registry maps names to cells; everything that takes a cell by name (the language model, the
Flax modules, the command line, the benchmark) asks `get_cell`, which also accepts an import path
`package.module:attribute` for a cell defined in the user's own code.

| name | cell | gates | source |
|---|---|---|---|
| `lstm` | `rnn_jax.cells.lstm` | i, f, o, g | the notes; Hochreiter & Schmidhuber 1997 |
| `gru` | `rnn_jax.cells.gru` | r, u, g | the notes; Cho et al. 2014, Chung et al. 2014 |
| `elman` | `rnn_jax.cells.elman` | - | Elman 1990 |
| `peephole_lstm` | `rnn_jax.cells.peephole` | i, f, o, g + peepholes | Gers & Schmidhuber 2000 |
| `lstmp` | `rnn_jax.cells.lstmp.LSTMPCell(proj_size)` | i, f, o, g + projection | Sak et al. 2014 |
| `ln_lstm`, `ln_gru` | `rnn_jax.cells.layernorm` | as LSTM / GRU | Ba et al. 2016 |
| `cifg` | `rnn_jax.cells.cifg` | i, o, g (f = 1 − i) | Greff et al. 2017 |
| `mgu` | `rnn_jax.cells.mgu` | f, g | Zhou et al. 2016 |
| `indrnn` | `rnn_jax.cells.indrnn` | - (diagonal recurrence) | Li et al. 2018 |
| `mingru` | `rnn_jax.cells.mingru` | z, h (input-only: state-linear) | Feng et al. 2024 |
| `minlstm` | `rnn_jax.cells.minlstm` | f, i, h (input-only: state-linear) | Feng et al. 2024 |
| `lru` | `rnn_jax.cells.lru` | - (complex diagonal, state-linear) | Orvieto et al. 2023 |
| `rglru` | `rnn_jax.cells.rglru` | r, i, v (gated diagonal, state-linear) | De et al. 2024 (Griffin) |
| `slstm` | `rnn_jax.cells.slstm` | i, f, o, g (exponential input gate, block-diagonal heads) | Beck et al. 2024 (xLSTM) |

Examples:
    >>> from rnn_jax.cells import get_cell, register_cell, lstm
    >>> get_cell("lstm") is lstm
    True
    >>> register_cell("my_lstm", lstm)
    >>> get_cell("my_lstm") is lstm
    True
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from rnn_jax.errors import ConfigError
from rnn_jax.cells import cifg, elman, gru, indrnn, lru, lstm, mgu, mingru, minlstm, peephole, rglru, slstm
from rnn_jax.cells._common import HiddenState
from rnn_jax.cells.base import Cell, FusedSpec, HoistableCell, Recurrence, check_cell, output_size, param_dtype
from rnn_jax.cells.layernorm import ln_gru, ln_lstm
from rnn_jax.cells.lstmp import LSTMPCell

CELLS: dict[str, Any] = {}
"""Registered cells by name (cells that need arguments, such as LSTMP's projection size, are in `FACTORIES`)."""

FACTORIES: dict[str, Callable[..., Any]] = {}
"""Registered cell factories by name: `get_cell(name, **arguments)` calls them (e.g. "lstmp" with proj_size)."""


def register_cell(name: str, cell: Any = None, *, factory: Callable[..., Any] | None = None,
                  replace: bool = False) -> None:
    """Registers a cell (or a factory of cells taking keyword arguments) under `name`.

    Raises:
        ValueError: the name is taken (pass replace=True to rebind it), or neither or both of cell/factory given.
        TypeError: `cell` does not follow the cell contract.
    """
    if (cell is None) == (factory is None):
        raise ValueError("register_cell needs exactly one of a cell or a factory")
    if not replace and (name in CELLS or name in FACTORIES):
        raise ValueError(f"a cell named {name!r} is already registered; pass replace=True to rebind it")
    CELLS.pop(name, None)
    FACTORIES.pop(name, None)
    if factory is not None:
        FACTORIES[name] = factory
    else:
        CELLS[name] = check_cell(cell, f"register_cell({name!r}, ...)")


def names() -> list[str]:
    """Every registered name, sorted."""
    return sorted(set(CELLS) | set(FACTORIES))


def _import_cell(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cell {path!r}: cannot import module {module_name!r} ({error}). Check the path "
                         "`package.module:attribute` and that the module is on PYTHONPATH.") from None
    if not hasattr(module, attribute):
        raise ConfigError(f"cell {path!r}: module {module_name!r} has no attribute {attribute!r}")
    return check_cell(getattr(module, attribute), f"cell {path!r}")


def get_cell(name: str, **arguments) -> Any:
    """A cell by registered name or import path `package.module:attribute`.

    Arguments that are None are ignored; others go to the cell's factory (e.g. `get_cell("lstmp", proj_size=4)`)
    and are an error for a plain cell.
    """
    given = {key: value for key, value in arguments.items() if value is not None}
    if name in FACTORIES:
        try:
            return FACTORIES[name](**given)
        except TypeError as error:
            raise ConfigError(f"cell {name!r} does not take these arguments ({error})") from None
    if ":" in name:
        cell = _import_cell(name)
    elif name in CELLS:
        cell = CELLS[name]
    else:
        raise ConfigError(f"unknown cell {name!r}; expected one of {names()} or an import path "
                         "'package.module:attribute'")
    if given:
        raise ConfigError(f"cell {name!r} takes no arguments; got {sorted(given)}")
    return cell


def init_options(cell: Any, offered: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options of `offered` that the cell's `init` accepts (all of them if it takes **options).

    An offered option the cell does not accept is dropped when it equals its entry in `defaults`, else refused,
    so a setting never silently does nothing.
    """
    parameters = inspect.signature(cell.init).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(offered)
    accepted = {key: value for key, value in offered.items() if key in parameters}
    for key, value in offered.items():
        if key not in parameters and (defaults is None or defaults.get(key) != value):
            raise ConfigError(f"option {key}={value!r} does not apply to this cell: its init takes "
                             f"{', '.join(list(parameters)[3:]) or 'no options'}. Leave {key} at its default.")
    return accepted


for _name, _cell in {"lstm": lstm, "gru": gru, "elman": elman, "peephole_lstm": peephole, "ln_lstm": ln_lstm,
                     "ln_gru": ln_gru, "cifg": cifg, "mgu": mgu, "indrnn": indrnn,
                     "mingru": mingru, "minlstm": minlstm, "lru": lru, "rglru": rglru,
                     "slstm": slstm}.items():
    register_cell(_name, _cell)


def _lstmp(proj_size: int | None = None) -> LSTMPCell:
    if proj_size is None:
        raise ConfigError("cell 'lstmp' needs proj_size (the projection size P)")
    return LSTMPCell(proj_size)


register_cell("lstmp", factory=_lstmp)

__all__ = ["CELLS", "Cell", "FACTORIES", "FusedSpec", "HiddenState", "HoistableCell", "LSTMPCell", "Recurrence",
           "cifg", "elman", "get_cell", "gru", "indrnn", "init_options", "ln_gru", "ln_lstm", "lru", "lstm", "mgu", "mingru",
           "minlstm", "names", "output_size", "param_dtype", "peephole", "register_cell", "rglru", "slstm"]
