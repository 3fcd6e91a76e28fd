"""Compressor settings from text, parsed in one place: ``--set bits=4`` and ``--bits 4`` on the command
line (:mod:`app.cli.compress`), ``?bits=4&group_size=128`` in the Compress page's URL
(:mod:`app.views.compress`).

A value is typed by the config field it sets, as :meth:`compressors.base.CompressorConfig.describe`
declares it (``"int"``, ``"float"``, ``"bool"``, ``"int | None"``...), so ``bits=4`` is the number 4
wherever it was typed. The config dataclass still validates ranges and choices; this module only turns
text into values and says which key or value it could not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_value(raw: str, ftype: str) -> Any:
    """``raw`` as the field's declared type; ``ValueError`` (saying what was expected) when it is not one.

    ``"none"``/``"null"`` is None for a field that is not a number or a flag.
    """
    t = str(ftype).lower()
    value = raw.strip()
    if "bool" in t:
        if value.lower() in TRUE:
            return True
        if value.lower() in FALSE:
            return False
        raise ValueError(f"{raw!r} is not a boolean (true/false)")
    if "int" in t and "float" not in t:
        return int(value)
    if "float" in t:
        return float(value)
    if value.lower() in ("none", "null"):
        return None
    return value


def split_assignment(item: str) -> tuple[str, str]:
    """``"group-size = 128"`` -> ``("group_size", "128")``; ``ValueError`` without an ``=``."""
    if "=" not in item:
        raise ValueError(f"{item!r}: write key=value")
    key, value = item.split("=", 1)
    return key.strip().replace("-", "_"), value.strip()


def config_from_assignments(
    compressor_id: str, assignments: Iterable[str], shortcuts: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The config dict from ``--set key=value`` items and typed shortcut options (``--bits 4``).

    Raises :class:`compressors.base.ConfigError` naming the key or value and the compressor's settings.
    """
    from compressors.base import CompressorId, ConfigError, get_compressor

    fields = {f["name"]: f for f in get_compressor(CompressorId(compressor_id)).config_cls.describe()}
    cfg: dict[str, Any] = {}
    for key, value in (shortcuts or {}).items():
        if value is None:
            continue
        if key not in fields:
            raise ConfigError(
                f"--{key.replace('_', '-')} does not apply to {compressor_id}; its settings: {sorted(fields)}"
            )
        cfg[key] = value
    for item in assignments:
        try:
            key, raw = split_assignment(item)
        except ValueError:
            raise ConfigError(
                f"--set {item!r}: write key=value (settings of {compressor_id}: {sorted(fields)})"
            ) from None
        if key not in fields:
            raise ConfigError(f"unknown setting {key!r} for {compressor_id}; allowed: {sorted(fields)}")
        try:
            cfg[key] = parse_value(raw, str(fields[key]["type"]))
        except ValueError as exc:
            raise ConfigError(f"--set {key}={raw}: {exc}") from None
    return cfg


def defaults_from_query(
    fields: Iterable[Mapping[str, Any]], query: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """Form defaults from URL parameters (``?bits=4``), for the fields ``describe()`` lists.

    Returns ``(defaults, refusals)``: a value that is not of the field's type, outside its ``min``/``max``
    or not one of its ``choices`` is refused, never replaced by another value: it is left out of the
    defaults and a refusal says why; the page shows it and does not run until the link is fixed.
    """
    defaults: dict[str, Any] = {}
    refusals: list[str] = []
    for f in fields:
        name, typ = f["name"], str(f["type"])
        if name not in query:
            continue
        try:
            value = parse_value(query[name], typ)
        except ValueError:
            refusals.append(f"Refused ?{name}={query[name]!r}: not a {typ}.")
            continue
        lo, hi = f.get("min"), f.get("max")
        choices = f.get("choices")
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and ((lo is not None and value < lo) or (hi is not None and value > hi))
        ):
            refusals.append(f"Refused ?{name}={value}: outside {lo}..{hi}.")
            continue
        if choices and value not in list(choices):
            refusals.append(f"Refused ?{name}={value!r}: not one of {', '.join(map(str, choices))}.")
            continue
        defaults[name] = value
    return defaults, refusals


def int_param(raw: str | None, lo: int, hi: int, name: str = "value") -> tuple[int | None, str | None]:
    """A whole number from a URL parameter within ``[lo, hi]``: ``(value, None)``, ``(None, None)`` when
    absent, ``(None, refusal)`` when it is not a whole number or out of range (never another value)."""
    if raw is None:
        return None, None
    try:
        value = int(raw)
    except ValueError:
        return None, f"Refused ?{name}={raw!r}: not a whole number."
    if not lo <= value <= hi:
        return None, f"Refused ?{name}={value}: outside {lo}..{hi}."
    return value, None


def int_in_range(raw: str | None, default: int, lo: int, hi: int) -> int:
    """A whole number from text (a URL parameter) within ``[lo, hi]``; ``default`` otherwise."""
    value, _ = int_param(raw, lo, hi)
    return default if value is None else value
