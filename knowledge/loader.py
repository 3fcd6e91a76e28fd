"""Load and validate the knowledge base's YAML data files, with errors that point at the exact spot.

A data file is edited by people, so a mistake in it must come back as one line a person can act on:
the file, the entry (its 1-based position and its id), the field path and what is allowed, e.g.::

    knowledge/data/methods/x.yaml: entry #3 (id 'gptq'): grades.quality_drop: 'tiny' is not one of
    minimal, low, moderate, high (line 41)

Layout of ``knowledge/data/``:

- ``methods/*.yaml``: top-level key ``methods:``, a list of :class:`~knowledge.schema.Method` entries;
- ``evidence/*.yaml``: top-level key ``evidence:``, a list of :class:`~knowledge.schema.Evidence` rows;
- ``hardware.yaml``: top-level key ``hardware:``, one :class:`~knowledge.schema.HardwareInfo` per target;
- ``formats.yaml``: top-level keys ``formats:`` and ``engines:`` (:class:`~knowledge.schema.FormatInfo`,
  :class:`~knowledge.schema.EngineInfo`);
- ``recipes/*.yaml``: top-level key ``recipes:``, a list of :class:`~knowledge.recipes.Recipe` entries
  (a method with a concrete configuration, format, engines and commands).

Each file is checked on its own (schema), then all of them together (:func:`load_all`): duplicate ids,
``composes_with``/``excludes`` naming unknown methods, evidence for unknown methods, output formats
and engines that ``formats.yaml`` does not know or that do not load each other, hardware targets
without a description, recipes whose method, format, engines or compressor do not exist or do not fit
together. Every problem found is reported, not only the first.
"""

from __future__ import annotations

import difflib
import logging
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from knowledge.recipes import Recipe
from knowledge.schema import (
    EngineInfo,
    Evidence,
    FormatInfo,
    Hardware,
    HardwareInfo,
    Method,
    Metric,
    ServingEngine,
)

ItemT = TypeVar("ItemT", bound=BaseModel)

log = logging.getLogger(__name__)

#: The bundled data files.
DATA_DIR = Path(__file__).resolve().parent / "data"

#: Top-level key of each kind of data file -> the model of one entry.
KINDS: dict[str, type[BaseModel]] = {
    "methods": Method,
    "evidence": Evidence,
    "hardware": HardwareInfo,
    "formats": FormatInfo,
    "engines": EngineInfo,
    "recipes": Recipe,
}
#: Which top-level keys a file may hold together (formats.yaml holds both formats and engines).
_FILE_KINDS: tuple[frozenset[str], ...] = (
    frozenset({"methods"}),
    frozenset({"evidence"}),
    frozenset({"hardware"}),
    frozenset({"formats", "engines"}),
    frozenset({"recipes"}),
)


# ---------------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one data file, located as precisely as the file allows."""

    file: str
    message: str
    entry: int | None = None  # 1-based position in the file's list
    entry_id: str | None = None
    field: str | None = None  # dotted path inside the entry, e.g. "grades.quality_drop"
    line: int | None = None  # 1-based line in the file
    id_key: str = "id"  # what entry_id is: the entry's "id", or the "method" of an evidence row

    def __str__(self) -> str:
        parts = [self.file]
        if self.entry is not None:
            parts.append(
                f"entry #{self.entry}" + (f" ({self.id_key} {self.entry_id!r})" if self.entry_id else "")
            )
        if self.field:
            parts.append(self.field)
        text = ": ".join(parts) + ": " + self.message
        if self.line is not None:
            text += f" (line {self.line})"
        return text


class DataFileError(ValueError):
    """One or more data files are invalid; ``problems`` lists each, ``str()`` prints one per line."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def files(self) -> list[str]:
        return sorted({p.file for p in self.problems})


def display_path(path: Path) -> str:
    """The path as a user would type it: relative to the working directory (or the repo) when inside it."""
    path = Path(path).resolve()
    for base in (Path.cwd().resolve(), DATA_DIR.parent.parent):
        try:
            return str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)


# ---------------------------------------------------------------------------------------------------
# YAML reading: duplicate keys are errors, and every node keeps its line for error messages


if TYPE_CHECKING:
    # CSafeLoader has SafeLoader's API (libyaml parser, same constructor and resolver); the stubs
    # describe SafeLoader in full, so the checker sees that one.
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):
    """Safe loader (libyaml's C parser when installed: 4x faster) that refuses a key given twice in one
    mapping, where PyYAML would silently keep the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} appears twice in one mapping (first on line {seen[key]}); keep one",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(path: Path, shown: str) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError([Problem(shown, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError([Problem(shown, f"cannot read the file: {exc}")]) from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        raise DataFileError([Problem(shown, f"not valid YAML: {reason or exc}", line=line)]) from None
    finally:
        loader.dispose()
    return data, node


def _child(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        pairs: list[tuple[yaml.Node, yaml.Node]] = node.value
        for k, v in pairs:
            if k.value == str(key):
                return v
    elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        items: list[yaml.Node] = node.value
        return items[key]
    return None


def _key_node(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        pairs: list[tuple[yaml.Node, yaml.Node]] = node.value
        for k, _ in pairs:
            if k.value == str(key):
                return k
    return None


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """1-based line of the field at ``loc`` under ``node``: its key's line when present, else the line
    of the deepest mapping that exists (where a missing field should be added)."""
    current = node
    for i, part in enumerate(loc):
        key = _key_node(current, part)
        nxt = _child(current, part)
        if nxt is None:
            break
        current = key if (key is not None and i == len(loc) - 1) else nxt
    return current.start_mark.line + 1 if current is not None else None


# ---------------------------------------------------------------------------------------------------
# pydantic errors -> one readable sentence each


def _format_loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _unwrap(annotation: Any) -> Any:
    """The model class inside Optional[...] / list[...] annotations, or None."""
    origin = typing.get_origin(annotation)
    if origin is None:
        return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    for arg in typing.get_args(annotation):
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current


def _describe(err: ErrorDetails, model: type[BaseModel]) -> tuple[tuple[Any, ...], str]:
    """(location, message) for one pydantic error, phrased for a person editing the file."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    given = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "enum":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        msg = f"{given!r} is not one of {', '.join(allowed)}"
        close = difflib.get_close_matches(str(given), allowed, n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        return loc, msg
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = list(parent.model_fields) if parent is not None else []
        msg = f"unknown key {loc[-1]!r}"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        if allowed:
            msg += f"; allowed keys: {', '.join(allowed)}"
        return loc, msg
    if kind == "missing":
        return loc, f"missing required field {loc[-1]!r}" if loc else "missing required field"
    if kind == "model_type" or kind == "model_attributes_type":
        return loc, f"expected a mapping of field: value, got {type(given).__name__} {given!r}"
    text = str(err.get("msg", "invalid value"))
    if text.startswith("Value error, "):
        return loc, text[len("Value error, ") :]
    return loc, f"{text} (got {given!r})"


# ---------------------------------------------------------------------------------------------------
# One file


@dataclass
class Entry(Generic[ItemT]):
    """One validated entry and where it came from (for cross-file error messages). Generic over the
    entry's model so the cross-file checks read ``Method`` or ``Evidence`` fields with their types."""

    item: ItemT
    file: str
    index: int  # 1-based
    node: yaml.Node | None

    @property
    def ident(self) -> str | None:
        value = getattr(self.item, "id", None)
        return str(value) if value is not None else None

    def problem(self, field_path: str, message: str, loc: Sequence[Any] = ()) -> Problem:
        key, label = (
            ("id", self.ident) if self.ident is not None else ("method", getattr(self.item, "method", None))
        )
        return Problem(
            self.file,
            message,
            entry=self.index,
            entry_id=label,
            field=field_path,
            id_key=key,
            line=_line_of(self.node, loc) if loc else (self.node.start_mark.line + 1 if self.node else None),
        )


@dataclass
class Entries:
    """The entries of one or more files, one typed list per kind (the keys of :data:`KINDS`)."""

    methods: list[Entry[Method]] = field(default_factory=list)
    evidence: list[Entry[Evidence]] = field(default_factory=list)
    hardware: list[Entry[HardwareInfo]] = field(default_factory=list)
    formats: list[Entry[FormatInfo]] = field(default_factory=list)
    engines: list[Entry[EngineInfo]] = field(default_factory=list)
    recipes: list[Entry[Recipe]] = field(default_factory=list)

    def count(self, kind: str) -> int:
        sizes = {
            "methods": len(self.methods),
            "evidence": len(self.evidence),
            "hardware": len(self.hardware),
            "formats": len(self.formats),
            "engines": len(self.engines),
            "recipes": len(self.recipes),
        }
        return sizes[kind]

    @classmethod
    def union(cls, parsed: Iterable[ParsedFile]) -> Entries:
        out = cls()
        for p in parsed:
            out.methods += p.entries.methods
            out.evidence += p.entries.evidence
            out.hardware += p.entries.hardware
            out.formats += p.entries.formats
            out.engines += p.entries.engines
            out.recipes += p.entries.recipes
        return out


@dataclass
class ParsedFile:
    path: Path
    shown: str
    kinds: frozenset[str]
    entries: Entries = field(default_factory=Entries)


def _entry_id(raw: Any) -> tuple[str, str | None]:
    """("id", value) for entries with an id, ("method", value) for evidence rows."""
    if isinstance(raw, dict):
        for key in ("id", "method"):
            if raw.get(key) is not None:
                return key, str(raw[key])
    return "id", None


def parse_file(path: Path | str, expected: Iterable[str] | None = None) -> ParsedFile:
    """Read and validate one data file; its kind comes from its top-level key(s).

    ``expected`` restricts the allowed top-level keys (e.g. a file under ``methods/`` must hold
    ``methods:``). Raises :class:`DataFileError` listing every invalid entry of the file.
    """
    path = Path(path)
    shown = display_path(path)
    data, root = _parse_yaml(path, shown)
    allowed_keys = sorted(KINDS) if expected is None else sorted(expected)
    if not isinstance(data, dict) or not data:
        raise DataFileError(
            [
                Problem(
                    shown,
                    f"the file must be a mapping with a top-level key ({' or '.join(allowed_keys)}) holding a list, "
                    f"got {type(data).__name__}",
                )
            ]
        )
    keys = frozenset(data)
    unknown = sorted(str(k) for k in keys if k not in allowed_keys)
    if unknown:
        close = difflib.get_close_matches(unknown[0], allowed_keys, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataFileError(
            [
                Problem(
                    shown,
                    f"unknown top-level key {unknown[0]!r}{hint}; allowed: {', '.join(allowed_keys)}",
                    line=_line_of(root, [unknown[0]]),
                )
            ]
        )
    if not any(keys <= group for group in _FILE_KINDS):
        raise DataFileError(
            [
                Problem(
                    shown,
                    f"top-level keys {sorted(keys)} cannot share one file; allowed together: "
                    + "; ".join(" + ".join(sorted(g)) for g in _FILE_KINDS),
                )
            ]
        )
    parsed = ParsedFile(path=path, shown=shown, kinds=keys)
    problems: list[Problem] = []

    def entries_of(key: str, model: type[ItemT]) -> list[Entry[ItemT]]:
        """The valid entries under ``key``; the invalid ones go to ``problems``."""
        items = data[key]
        list_node = _child(root, key)
        if items is None:
            items = []
        if not isinstance(items, list):
            problems.append(
                Problem(
                    shown,
                    f"{key!r} must be a list of entries (each starting with '- '), "
                    f"got {type(items).__name__}",
                    line=_line_of(root, [key]),
                )
            )
            return []
        entries: list[Entry[ItemT]] = []
        for i, raw in enumerate(items):
            node = _child(list_node, i)
            try:
                item = model.model_validate(raw)
            except ValidationError as exc:
                key_name, ident = _entry_id(raw)
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
            entries.append(Entry(item=item, file=shown, index=i + 1, node=node))
        return entries

    # one branch per kind (in sorted key order, as the problems are reported) so each list keeps its type
    for key in sorted(keys):
        if key == "engines":
            parsed.entries.engines = entries_of(key, EngineInfo)
        elif key == "evidence":
            parsed.entries.evidence = entries_of(key, Evidence)
        elif key == "formats":
            parsed.entries.formats = entries_of(key, FormatInfo)
        elif key == "hardware":
            parsed.entries.hardware = entries_of(key, HardwareInfo)
        elif key == "methods":
            parsed.entries.methods = entries_of(key, Method)
        elif key == "recipes":
            parsed.entries.recipes = entries_of(key, Recipe)
    if problems:
        raise DataFileError(problems)
    return parsed


# ---------------------------------------------------------------------------------------------------
# The whole knowledge base


@dataclass(frozen=True)
class KnowledgeData:
    """Everything in the data files, validated and cross-checked, in file order."""

    methods: tuple[Method, ...]
    evidence: tuple[Evidence, ...]
    hardware: tuple[HardwareInfo, ...]
    formats: tuple[FormatInfo, ...]
    engines: tuple[EngineInfo, ...]
    files: tuple[str, ...]
    warnings: tuple[Problem, ...] = ()
    recipes: tuple[Recipe, ...] = ()


def method_files(data_dir: Path = DATA_DIR) -> list[Path]:
    return sorted((Path(data_dir) / "methods").glob("*.yaml"))


def evidence_files(data_dir: Path = DATA_DIR) -> list[Path]:
    return sorted((Path(data_dir) / "evidence").glob("*.yaml"))


def recipe_files(data_dir: Path = DATA_DIR) -> list[Path]:
    return sorted((Path(data_dir) / "recipes").glob("*.yaml"))


def resolve_format(name: str, formats: Iterable[FormatInfo]) -> FormatInfo | None:
    """The format a method's free-text format name refers to: longest id/``matches`` prefix wins.

    ``"safetensors-fp16 + medusa-heads"`` resolves to ``safetensors``, ``"safetensors-bnb-nf4"`` to
    ``bitsandbytes`` (its ``matches`` holds ``safetensors-bnb``). A prefix must end at a word boundary.
    """
    text = name.strip().lower()
    best: FormatInfo | None = None
    best_len = -1
    for fmt in formats:
        for prefix in (fmt.id, *fmt.matches):
            p = prefix.lower()
            if text == p or (text.startswith(p) and not text[len(p)].isalnum()):
                if len(p) > best_len:
                    best, best_len = fmt, len(p)
    return best


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _parse_many(paths: Iterable[tuple[Path, Iterable[str]]]) -> tuple[list[ParsedFile], list[Problem]]:
    parsed, problems = [], []
    for path, expected in paths:
        try:
            parsed.append(parse_file(path, expected))
        except DataFileError as exc:
            problems.extend(exc.problems)
    return parsed, problems


def _cross_check(
    entries: Entries,
    *,
    reference_only: frozenset[str] = frozenset(),
    warnings: list[Problem] | None = None,
) -> list[Problem]:
    """Checks that need more than one entry; returns the errors and appends soft findings to ``warnings``.

    Entries from files in ``reference_only`` are context for resolving names and are not themselves
    reported (used when validating a single user file). Output formats are free text in the method
    files, so a format that formats.yaml does not know is a warning, not an error."""
    problems: list[Problem] = []
    methods, evidence, hardware = entries.methods, entries.evidence, entries.hardware
    formats, engines = entries.formats, entries.engines

    def report(entry: Entry[ItemT], problem: Problem) -> None:
        if entry.file not in reference_only:
            problems.append(problem)

    def report_ok(entry: Entry[Recipe]) -> bool:
        return entry.file not in reference_only

    def check_unique(entries: list[Entry[ItemT]], what: str) -> dict[str, Entry[ItemT]]:
        first: dict[str, Entry[ItemT]] = {}
        for e in entries:
            ident = e.ident
            if ident is None:
                continue
            if ident in first:
                f = first[ident]
                report(
                    e,
                    e.problem(
                        "id",
                        f"duplicate {what} id {ident!r}: already defined in {f.file} "
                        f"entry #{f.index}; ids must be unique",
                        ["id"],
                    ),
                )
            else:
                first[ident] = e
        return first

    by_id = check_unique(methods, "method")
    hw_by_id = check_unique(hardware, "hardware")
    fmt_by_id = check_unique(formats, "format")
    eng_by_id = check_unique(engines, "engine")

    for e in methods:
        m = e.item
        for key in ("composes_with", "excludes"):
            for i, ref in enumerate(getattr(m, key)):
                if ref not in by_id:
                    report(
                        e,
                        e.problem(
                            f"{key}[{i}]", f"unknown method id {ref!r}{_suggest(ref, by_id)}", [key, i]
                        ),
                    )
        if formats and warnings is not None:
            for i, out in enumerate(m.formats):
                fmt = resolve_format(out.format, (f.item for f in fmt_by_id.values()))
                if fmt is None:
                    if e.file not in reference_only:
                        warnings.append(
                            e.problem(
                                f"formats[{i}].format",
                                f"output format {out.format!r} matches no format in formats.yaml "
                                f"(known: {', '.join(fmt_by_id)}); start it with one of those ids or add it there",
                                ["formats", i, "format"],
                            )
                        )
                    continue
                for j, eng in enumerate(out.engines):
                    info = eng_by_id.get(str(eng))
                    if info is not None and fmt.id not in info.item.loads:
                        if e.file not in reference_only:
                            warnings.append(
                                e.problem(
                                    f"formats[{i}].engines[{j}]",
                                    f"engine {str(eng)!r} does not load format {fmt.id!r} according to formats.yaml "
                                    f"(it loads: {', '.join(info.item.loads)})",
                                    ["formats", i, "engines", j],
                                )
                            )
    for ev_entry in evidence:
        ev = ev_entry.item
        if ev.method not in by_id:
            report(
                ev_entry,
                ev_entry.problem(
                    "method",
                    f"evidence for unknown method {ev.method!r}{_suggest(ev.method, by_id)}",
                    ["method"],
                ),
            )
    seen_rows: dict[tuple[str, str, str, Metric, str | None], Entry[Evidence]] = {}
    for ev_entry in evidence:
        ev = ev_entry.item
        row = (ev.method, ev.model, ev.setting, ev.metric, ev.dataset)
        if row in seen_rows:
            f = seen_rows[row]
            report(
                ev_entry,
                ev_entry.problem(
                    "setting",
                    f"same method, model, setting, metric and dataset as {f.file} "
                    f"entry #{f.index}; make the setting say what differs",
                    ["setting"],
                ),
            )
        else:
            seen_rows[row] = ev_entry
    problems += _check_recipes(entries.recipes, by_id, fmt_by_id, eng_by_id, report_ok=report_ok)
    if hardware:
        missing = [h.value for h in Hardware if h.value not in hw_by_id]
        if missing:
            files = sorted({h.file for h in hardware})
            problems.append(
                Problem(
                    ", ".join(files),
                    f"hardware targets without an entry: {', '.join(missing)}; "
                    "every value of schema.Hardware needs one",
                )
            )
    if engines:
        missing = [s.value for s in ServingEngine if s.value not in eng_by_id]
        if missing:
            files = sorted({x.file for x in engines})
            problems.append(
                Problem(
                    ", ".join(files),
                    f"serving engines without an entry: {', '.join(missing)}; "
                    "every value of schema.ServingEngine needs one",
                )
            )
        for eng_entry in engines:
            for i, fmt_id in enumerate(eng_entry.item.loads):
                if fmt_id not in fmt_by_id:
                    report(
                        eng_entry,
                        eng_entry.problem(
                            f"loads[{i}]",
                            f"unknown format {fmt_id!r}{_suggest(fmt_id, fmt_by_id)}",
                            ["loads", i],
                        ),
                    )
    return problems


def _check_recipes(
    recipes: list[Entry[Recipe]],
    methods: dict[str, Entry[Method]],
    formats: dict[str, Entry[FormatInfo]],
    engines: dict[str, Entry[EngineInfo]],
    *,
    report_ok: typing.Callable[[Entry[Recipe]], bool],
) -> list[Problem]:
    """A recipe's method, format, engines and compressor must exist and fit together; ids are unique."""
    problems: list[Problem] = []
    seen: dict[str, Entry[Recipe]] = {}
    for e in recipes:
        if not report_ok(e):
            seen.setdefault(e.item.id, e)
            continue
        r = e.item
        if r.id in seen:
            f = seen[r.id]
            problems.append(
                e.problem(
                    "id",
                    f"duplicate recipe id {r.id!r}: already defined in {f.file} entry #{f.index}",
                    ["id"],
                )
            )
        seen.setdefault(r.id, e)
        method = methods.get(r.method)
        if method is None:
            problems.append(
                e.problem(
                    "method", f"unknown method id {r.method!r}{_suggest(r.method, methods)}", ["method"]
                )
            )
        if formats and r.format not in formats:
            problems.append(
                e.problem("format", f"unknown format {r.format!r}{_suggest(r.format, formats)}", ["format"])
            )
        if engines:
            for i, use in enumerate(r.engines):
                info = engines.get(use.engine.value)
                if info is not None and formats and r.format in formats and r.format not in info.item.loads:
                    problems.append(
                        e.problem(
                            f"engines[{i}].engine",
                            f"engine {use.engine.value!r} does not load format {r.format!r} according to "
                            f"formats.yaml (it loads: {', '.join(info.item.loads)})",
                            ["engines", i, "engine"],
                        )
                    )
        if r.compressor is not None and method is not None and method.item.compressor != r.compressor.id:
            have = method.item.compressor
            problems.append(
                e.problem(
                    "compressor.id",
                    f"compressor {r.compressor.id!r} does not run method {r.method!r} "
                    + (f"(its compressor is {have!r})" if have else "(it has no bundled compressor)"),
                    ["compressor", "id"],
                )
            )
    return problems


def _bundled_paths(data_dir: Path) -> list[tuple[Path, Iterable[str]]]:
    data_dir = Path(data_dir)
    paths: list[tuple[Path, Iterable[str]]] = []
    paths += [(p, ("methods",)) for p in method_files(data_dir)]
    paths += [(p, ("evidence",)) for p in evidence_files(data_dir)]
    paths += [(p, ("recipes",)) for p in recipe_files(data_dir)]
    for name, keys in (("hardware.yaml", ("hardware",)), ("formats.yaml", ("formats", "engines"))):
        if (data_dir / name).exists():
            paths.append((data_dir / name, keys))
    return paths


def load_all(data_dir: Path | str = DATA_DIR) -> KnowledgeData:
    """Load every data file under ``data_dir``, validate each and all of them together.

    Raises :class:`DataFileError` with every problem found in any file.
    """
    data_dir = Path(data_dir)
    paths = _bundled_paths(data_dir)
    parsed, problems = _parse_many(paths)
    kinds = {k for p in parsed for k in p.kinds}
    if not method_files(data_dir):
        problems.append(Problem(display_path(data_dir / "methods"), "no methods/*.yaml files found"))
    entries = Entries.union(parsed)
    warnings: list[Problem] = []
    problems += _cross_check(entries, warnings=warnings)
    if problems:
        raise DataFileError(problems)
    for w in warnings:
        log.debug("data warning: %s", w)
    log.debug("loaded %d files (%s)", len(parsed), ", ".join(sorted(kinds)))
    return KnowledgeData(
        methods=tuple(e.item for e in entries.methods),
        evidence=tuple(e.item for e in entries.evidence),
        hardware=tuple(e.item for e in entries.hardware),
        formats=tuple(e.item for e in entries.formats),
        engines=tuple(e.item for e in entries.engines),
        files=tuple(p.shown for p in parsed),
        warnings=tuple(warnings),
        recipes=tuple(e.item for e in entries.recipes),
    )


def load_methods(data_dir: Path | str = DATA_DIR) -> list[Method]:
    """All methods, in file order (files sorted by name), cross-checked against the other files."""
    return list(load_all(data_dir).methods)


def load_evidence(data_dir: Path | str = DATA_DIR) -> list[Evidence]:
    return list(load_all(data_dir).evidence)


@dataclass(frozen=True)
class FileReport:
    """What :func:`validate_file` found in a valid file."""

    path: str
    counts: dict[str, int]
    warnings: tuple[Problem, ...] = ()

    def __str__(self) -> str:
        return f"{self.path}: OK (" + ", ".join(f"{n} {k}" for k, n in self.counts.items()) + ")"


def validate_file(path: Path | str, data_dir: Path | str = DATA_DIR) -> FileReport:
    """Validate one file a user edits, of any kind (detected by its top-level key).

    Its entries are checked against the schema and against the bundled knowledge base: a methods file
    may reference bundled methods in ``composes_with``; an evidence file may cite any bundled method.
    If ``path`` is one of the bundled files, it replaces that file in the check (no false duplicates).
    Raises :class:`DataFileError`; returns a :class:`FileReport` with the entry counts.
    """
    path = Path(path)
    target = parse_file(path)  # raises for schema problems of this file
    data_dir = Path(data_dir)
    context, ctx_problems = _parse_many(
        (p, k) for p, k in _bundled_paths(data_dir) if p.resolve() != path.resolve()
    )
    if ctx_problems:
        log.warning("the bundled data has problems too (run `shrinkwise kb validate`): %s", ctx_problems[0])
    reference = frozenset(p.shown for p in context)
    everything = context + [target]
    warnings: list[Problem] = []
    problems = _cross_check(Entries.union(everything), reference_only=reference, warnings=warnings)
    # completeness checks (every Hardware has an entry) name the bundled files too; keep only ours
    problems = [p for p in problems if target.shown in p.file]
    if problems:
        raise DataFileError(problems)
    return FileReport(
        path=target.shown,
        counts={k: target.entries.count(k) for k in sorted(target.kinds)},
        warnings=tuple(w for w in warnings if w.file == target.shown),
    )
