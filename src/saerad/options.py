"""Command-line options made from what already holds the defaults: a config dataclass's fields (their docstrings
become the help) or a function's keyword arguments."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Any, Callable, Iterable, Literal, Union


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (Python keeps none of them at run time)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _kind(hint: Any) -> tuple[Any, Any]:
    """(argparse type, choices) for a field's type hint; Optional[X] is X (None stays the default)."""
    if typing.get_origin(hint) is Union:
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    return hint, None


def _help(text: str, default: Any) -> str:
    text = text.replace("%", "%%")  # argparse formats help with %
    return f"{text} (default: {default})" if default is not None and not isinstance(default, bool) else text


def add_fields(parser: argparse.ArgumentParser, cls: type, skip: Iterable[str] = ()) -> None:
    """One `--field-name` option per field of dataclass `cls`, with its default, type, choices and docstring."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({(cls.__doc__ or '').strip()})")
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        if hints[field.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default,
                               help=_help(docs.get(field.name, ""), None))
            continue
        kind, choices = _kind(hints[field.name])
        group.add_argument(flag, type=kind, choices=choices, default=field.default,
                           help=_help(docs.get(field.name, ""), field.default))


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The dataclass `cls` filled from parsed options (fields the parser does not have keep their defaults)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def defaults(fn: Callable) -> dict[str, Any]:
    """A function's keyword defaults, so that an option's default is read from the function it feeds."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}
