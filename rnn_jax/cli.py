"""Command-line options for typed (dataclass) configs: every field becomes a `--field-name` option.

Each option's help is the field's line in its class's `Attributes:` docstring section, with the value it takes when
the option is not given and, where the config class lists them (`field_choices()`), the accepted values. Booleans
are `--x` / `--no-x` (or `--x false`); tuples are comma-separated; an Optional field takes `none`. A nested
dataclass field `model` contributes a group of `--model-<its field>` options. `--print-config` prints the resolved
config as JSON and exits.

Examples:
    >>> import dataclasses
    >>> from rnn_jax.cli import parse_config
    >>> @dataclasses.dataclass(frozen=True)
    ... class C:
    ...     '''Attributes:
    ...         hidden_size: H.
    ...         bias: use biases.
    ...     '''
    ...     hidden_size: int = 20
    ...     bias: bool = True
    >>> parse_config(C(), ["--hidden-size", "64", "--no-bias"])
    C(hidden_size=64, bias=False)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import typing
from typing import Any, Sequence, TypeVar

from rnn_jax.errors import add_debug_flag

T = TypeVar("T")

PRINT_CONFIG_FLAG = "--print-config"


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
        return lambda text: tuple(inner(part.strip()) for part in text.split(",") if part.strip())  # "": ()
    return {bool: _parse_bool, int: int, float: float, str: str}.get(annotation, str)


class _BooleanAction(argparse.Action):
    """`--x` (true), `--x VALUE` (true/false, yes/no, 1/0) and `--no-x` (false)."""

    def __init__(self, option_strings, dest, **kwargs):
        negatives = ["--no-" + option[2:] for option in option_strings]
        super().__init__(option_strings + negatives, dest, nargs="?", type=_parse_bool, **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string.startswith("--no-"):
            if value is not None:
                parser.error(f"{option_string} takes no value (it means false)")
            value = False
        setattr(namespace, self.dest, True if value is None else value)


def field_docs(config_type: type) -> dict[str, str]:
    """Each field's description from the class docstring's `Attributes:` section ("a, b: text" documents both)."""
    docs, names, in_section = {}, [], False
    for line in (inspect.getdoc(config_type) or "").splitlines():
        if line.strip() == "Attributes:":
            in_section = True
            continue
        if not in_section:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        entry = re.match(r"^ {4}([\w, ]+):\s*(.*)$", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            for name in names:
                docs[name] = entry.group(2)
        elif line.strip() and names:
            for name in names:
                docs[name] += " " + line.strip()
    return docs


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(str(item) for item in value) or '""'
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _help(doc: str, default: Any, choices: Sequence[str] | None) -> str:
    parts = [f"default: {_shown(default)}"] + ([f"choices: {', '.join(map(str, choices))}"] if choices else [])
    return f"{doc + ' ' if doc else ''}[{'; '.join(parts)}]".replace("%", "%%")  # argparse formats help with %


def add_config_arguments(parser: argparse.ArgumentParser, config_type: type, prefix: str = "",
                         defaults: Any = None, title: str | None = None) -> None:
    """Adds one `--prefix-field-name` option per field of `config_type`, documented with its value in `defaults`.

    Args:
        parser: the parser to add to; nested dataclass fields get an argument group of their own.
        config_type: a dataclass type.
        prefix: prepended to the option names (nested fields: "model_").
        defaults: the instance whose values the options replace (shown as each option's default); None: the
            class's own defaults.
        title: a group title for the top-level fields (None: the parser's own options).
    """
    container = parser.add_argument_group(title) if title else parser
    defaults = config_type() if defaults is None else defaults
    hints, docs = typing.get_type_hints(config_type), field_docs(config_type)
    choices = config_type.field_choices() if hasattr(config_type, "field_choices") else {}
    for field in dataclasses.fields(config_type):
        if not field.init:
            continue
        value = getattr(defaults, field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            summary = (inspect.getdoc(hints[field.name]) or "").split("\n")[0].rstrip(".")
            add_config_arguments(parser, hints[field.name], prefix + field.name + "_", value,
                                 f"--{(prefix + field.name).replace('_', '-')}-* options: {summary}")
            continue
        name = "--" + (prefix + field.name).replace("_", "-")
        common = dict(dest=prefix + field.name, default=argparse.SUPPRESS,
                      help=_help(docs.get(field.name, ""), value, choices.get(field.name)))
        if hints[field.name] is bool:
            container.add_argument(name, action=_BooleanAction, metavar="BOOL", **common)
        else:
            container.add_argument(name, type=_converter(hints[field.name]), metavar=field.name.upper(), **common)


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


def add_print_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(PRINT_CONFIG_FLAG, action="store_true", help="print the resolved config as JSON and exit")


def print_config_and_exit(config: Any) -> None:
    """Prints `config` as indented JSON and exits with status 0 (like `--help`)."""
    print(json.dumps(dataclasses.asdict(config), indent=2, default=str))
    sys.exit(0)


def parse_config(default: T, argv: Sequence[str] | None = None, description: str = "") -> T:
    """Parses `--field-name value` overrides of a dataclass instance (`--help` shows its values as defaults)."""
    parser = argparse.ArgumentParser(description=description)
    add_config_arguments(parser, type(default), defaults=default)
    add_print_config_flag(parser)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    config = apply_overrides(default, args)
    if args.print_config:
        print_config_and_exit(config)
    return config
