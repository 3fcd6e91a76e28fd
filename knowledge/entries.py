"""Read one flat YAML table (``models:``, ``devices:``) into validated pydantic entries.

The model shapes and the devices are lists of entries with an ``id`` that nothing else in the
knowledge base cross-references the way methods and evidence do, so they do not go through
:func:`knowledge.loader.load_all`. They get the same treatment where it matters to a person editing
them: the YAML is read strictly (a key given twice is an error), every invalid entry is reported,
and each problem is one line naming the file, the entry (1-based position and id), the field and the
line, e.g.::

    knowledge/data/models.yaml: entry #4 (id 'llama-3.1-8b'): hidden_size: Input should be a valid
    integer (got 'big') (line 37)

The line-locating and message-phrasing helpers are the loader's, so both kinds of file read alike.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from knowledge.loader import (
    DataFileError,
    Problem,
    _child,
    _describe,
    _entry_id,
    _format_loc,
    _line_of,
    _parse_yaml,
    display_path,
)

T = TypeVar("T", bound=BaseModel)


def load_entries(path: Path | str, key: str, model: type[T]) -> list[T]:
    """The entries under the top-level ``key`` of the YAML file at ``path``, each validated as ``model``.

    Raises :class:`~knowledge.loader.DataFileError` listing every problem: the file is not a mapping
    with ``key``, an entry fails validation, or two entries share an ``id``.
    """
    path = Path(path)
    shown = display_path(path)
    data, root = _parse_yaml(path, shown)
    if not isinstance(data, dict) or key not in data:
        raise DataFileError([Problem(shown, f"the file must be a mapping with a top-level key {key!r}")])
    unknown = sorted(str(k) for k in data if k != key)
    if unknown:
        close = difflib.get_close_matches(unknown[0], [key], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataFileError(
            [
                Problem(
                    shown,
                    f"unknown top-level key {unknown[0]!r}{hint}; allowed: {key}",
                    line=_line_of(root, [unknown[0]]),
                )
            ]
        )
    items = data[key]
    if not isinstance(items, list):
        raise DataFileError(
            [
                Problem(
                    shown,
                    f"{key!r} must be a list of entries (each starting with '- '), got {type(items).__name__}",
                    line=_line_of(root, [key]),
                )
            ]
        )
    list_node = _child(root, key)
    problems: list[Problem] = []
    out: list[T] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        node = _child(list_node, i)
        key_name, ident = _entry_id(raw)
        try:
            item = model.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                loc, msg = _describe(err, model)
                problems.append(
                    Problem(
                        shown,
                        msg,
                        entry=i + 1,
                        entry_id=ident,
                        id_key=key_name,
                        field=_format_loc(loc) or None,
                        line=_line_of(node, loc),
                    )
                )
            continue
        if ident is not None:
            if ident in first_seen:
                problems.append(
                    Problem(
                        shown,
                        f"duplicate id {ident!r}: already defined in entry #{first_seen[ident]}; ids must be unique",
                        entry=i + 1,
                        entry_id=ident,
                        field="id",
                        line=_line_of(node, ["id"]),
                    )
                )
                continue
            first_seen[ident] = i + 1
        out.append(item)
    if problems:
        raise DataFileError(problems)
    return out


def close_matches(name: str, known: list[str], n: int = 3) -> str:
    """ " (did you mean 'a', 'b'?)" for the known names closest to ``name``, or "" when none is close.

    Names that contain what was typed come first ('h100' -> 'h100-sxm', 'h100-pcie'), then the
    spelling neighbours difflib finds ('lama-3.1-8b' -> 'llama-3.1-8b')."""
    lowered = {k.lower(): k for k in known}
    query = name.lower()
    picked = [k for k in lowered if query and query in k][:n]
    for c in difflib.get_close_matches(query, list(lowered), n=n, cutoff=0.5):
        if c not in picked and len(picked) < n:
            picked.append(c)
    return f" (did you mean {', '.join(repr(lowered[c]) for c in picked)}?)" if picked else ""
