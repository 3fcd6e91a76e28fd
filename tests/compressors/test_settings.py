"""Settings from text are parsed in one place for the CLI (--set, --bits) and the Compress page (?bits=)."""

from __future__ import annotations

import pytest

from compressors.base import ConfigError, get_compressor
from compressors.settings import (
    config_from_assignments,
    defaults_from_query,
    int_in_range,
    parse_value,
    split_assignment,
)


def test_values_are_typed_by_the_field():
    assert parse_value("4", "int") == 4 and parse_value(" 0.5", "float") == 0.5
    assert parse_value("yes", "bool") is True and parse_value("off", "bool") is False
    assert parse_value("128", "int | None") == 128 and parse_value("none", "str | None") is None
    assert parse_value("gptq", "str") == "gptq"
    with pytest.raises(ValueError, match="not a boolean"):
        parse_value("maybe", "bool")
    assert split_assignment("group-size = 128") == ("group_size", "128")


def test_cli_assignments_and_shortcuts():
    cfg = config_from_assignments("rtn", ["group-size=32"], {"bits": 3, "sparsity": None})
    assert cfg == {"bits": 3, "group_size": 32}
    with pytest.raises(ConfigError, match="write key=value"):
        config_from_assignments("rtn", ["bits"])
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        config_from_assignments("rtn", ["nope=1"])
    with pytest.raises(ConfigError, match="--sparsity does not apply to rtn"):
        config_from_assignments("rtn", [], {"sparsity": 0.5})
    with pytest.raises(ConfigError, match="--set bits=four"):
        config_from_assignments("rtn", ["bits=four"])


def test_page_query_defaults_refuse_bad_values_and_never_coerce_them():
    fields = get_compressor("rtn").config_cls.describe()
    defaults, warnings = defaults_from_query(fields, {"bits": "3", "group_size": "x", "job": "7"})
    assert defaults == {"bits": 3} and warnings == ["Refused ?group_size='x': not a int."]
    ranged = [{"name": "sparsity", "type": "float", "default": 0.5, "min": 0.0, "max": 0.95}]
    assert defaults_from_query(ranged, {"sparsity": "2"}) == (
        {},
        ["Refused ?sparsity=2.0: outside 0.0..0.95."],
    )
    chosen = [{"name": "bits", "type": "int", "default": 4, "choices": [2, 3, 4, 8]}]
    assert defaults_from_query(chosen, {"bits": "16"}) == ({}, ["Refused ?bits=16: not one of 2, 3, 4, 8."])
    assert int_in_range("64", 20, 1, 200) == 64
    assert (
        int_in_range("999", 20, 1, 200)
        == int_in_range("x", 20, 1, 200)
        == int_in_range(None, 20, 1, 200)
        == 20
    )
