"""Command-line overrides for typed (dataclass) configs: every field becomes a `--field-name` option.

Example:
    >>> import dataclasses
    >>> from rnn_jax.cli import parse_config
    >>> @dataclasses.dataclass(frozen=True)
    ... class C:
    ...     hidden_size: int = 20
    ...     cell: str = "lstm"
    >>> parse_config(C(), ["--hidden-size", "64"])
    C(hidden_size=64, cell='lstm')
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Sequence, TypeVar

from rnn_jax.errors import add_debug_flag

T = TypeVar("T")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false; got {text!r}")


def _converter(annotation: Any):
    """The argparse type for a field annotation (Optional[X] accepts 'none')."""
    origin_args = typing.get_args(annotation)
    if origin_args and type(None) in origin_args:
        inner = _converter(next(a for a in origin_args if a is not type(None)))
        return lambda text: None if text.lower() == "none" else inner(text)
    if typing.get_origin(annotation) is tuple:
        inner = _converter(origin_args[0]) if origin_args else str
        return lambda text: tuple(inner(part) for part in text.split(",") if part)  # "" is the empty tuple
    return {bool: _parse_bool, int: int, float: float, str: str}.get(annotation, str)


def add_config_arguments(parser: argparse.ArgumentParser, config_type: type, prefix: str = "") -> None:
    """Adds one `--prefix-field-name` option per dataclass field (default: unset, i.e. keep the preset).

    A nested dataclass field `model` contributes `--model-<its field>` options, recursively.
    """
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if not field.init:
            continue
        if dataclasses.is_dataclass(hints[field.name]):
            add_config_arguments(parser, hints[field.name], prefix + field.name + "_")
            continue
        name = "--" + (prefix + field.name).replace("_", "-")
        parser.add_argument(name, dest=prefix + field.name, type=_converter(hints[field.name]), default=argparse.SUPPRESS,
                            metavar=field.name.upper(), help="(default: from the preset config)")


def apply_overrides(config: T, namespace: argparse.Namespace, prefix: str = "") -> T:
    """A copy of `config` with every option given on the command line replaced."""
    changes = {}
    for field in dataclasses.fields(config):
        nested = getattr(config, field.name)
        if dataclasses.is_dataclass(nested):
            updated = apply_overrides(nested, namespace, prefix + field.name + "_")
            if updated is not nested:
                changes[field.name] = updated
            continue
        if hasattr(namespace, prefix + field.name):  # absent options are suppressed, so None can be given
            changes[field.name] = getattr(namespace, prefix + field.name)
    return dataclasses.replace(config, **changes) if changes else config


def parse_config(default: T, argv: Sequence[str] | None = None, description: str = "") -> T:
    """Parses `--field-name value` overrides of a dataclass instance."""
    parser = argparse.ArgumentParser(description=description)
    add_config_arguments(parser, type(default))
    add_debug_flag(parser)
    return apply_overrides(default, parser.parse_args(argv))
