"""Reading the user's JSON and JSONL files by one rule: a regular file, bounded, UTF-8, parsed without a
`RecursionError`, of the expected shape; every refusal one line naming the file (and the line of a JSONL)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Union

from .errors import MissingInput, UserError

MAX_JSON_BYTES = 1 << 30  # an embedding manifest lists every id: ~30 bytes a row, 10^7 rows is 300 MB


def _checked_file(path: Union[str, os.PathLike], what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: no such file (the {what})")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not the {what} file")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file (the {what})")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise UserError(f"{path}: {path.stat().st_size} bytes is over the limit of {MAX_JSON_BYTES} for the {what}")
    return path


def _decode(raw: bytes, where: str) -> str:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(f"{where}: UTF-16 text; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{where}: not UTF-8 text (byte {err.start} is {raw[err.start:err.start + 1]!r}); save it as "
                        "UTF-8") from None


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply to read") from None


def read_json(path: Union[str, os.PathLike], what: str, kind: type = dict) -> Any:
    """The JSON value in `path` (the user's `what`), which must be a `kind` (a JSON object by default)."""
    path = _checked_file(path, what)
    data = _parse(_decode(path.read_bytes(), str(path)), str(path))
    if not isinstance(data, kind):
        raise UserError(f"{path}: the {what} must be a JSON {'object' if kind is dict else kind.__name__}; got "
                        f"{type(data).__name__ if data is not None else 'null'}")
    return data


def read_jsonl(path: Union[str, os.PathLike], what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file; a line that is not a JSON object is refused."""
    path = _checked_file(path, what)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            line = _decode(raw, where)
            if not line.strip():
                continue
            record = _parse(line, where)
            if not isinstance(record, dict):
                raise UserError(f"{where}: expected a JSON object; got {type(record).__name__}")
            yield n, record


def text_field(record: dict, key: str, where: str) -> str:
    """`record[key]` as a string ('' when absent or null); a number, NaN, bool, list or object is refused."""
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        shown = "NaN" if isinstance(value, float) and math.isnan(value) else type(value).__name__
        raise UserError(f"{where}: {key!r} must be a string; got {shown}")
    return value


def id_field(record: dict, key: str, where: str) -> str:
    """`record[key]` as an id string: a string or an integer (a bool, float, null, list or object is refused)."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{where}: {key!r} must be a string or an integer; got "
                        f"{'missing' if key not in record else type(value).__name__}")
    return str(value)
