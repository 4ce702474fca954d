"""The shared config-file layer: the bounded YAML loader and the field reader's messages."""

from __future__ import annotations

import pytest

from exporter.configfile import (
    MAX_DEPTH,
    MAX_ERRORS_SHOWN,
    MAX_INTEGER_DIGITS,
    FieldReader,
    Invalid,
    YamlFileError,
    describe_type,
    parse_yaml,
)


def test_plain_yaml_loads_as_plain_data() -> None:
    text = "a: 1\nb: [x, 2.5, true, null]\nc: {d: '007'}\n"
    assert parse_yaml(text) == {"a": 1, "b": ["x", 2.5, True, None], "c": {"d": "007"}}


@pytest.mark.parametrize("text", ["when: 2001-12-14", "when: 2001-13-45", "when: 2001-12-14t21:59"])
def test_dates_stay_strings(text: str) -> None:
    data = parse_yaml(text)
    assert isinstance(data, dict) and isinstance(data["when"], str)


def test_nesting_up_to_the_cap_loads() -> None:
    depth = MAX_DEPTH - 1  # the top-level mapping is one level
    assert parse_yaml("a: " + "[" * depth + "]" * depth) is not None


def test_integer_of_max_digits_loads() -> None:
    assert parse_yaml("9" * MAX_INTEGER_DIGITS) == int("9" * MAX_INTEGER_DIGITS)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: &x 1\nb: *x\n", "aliases (*name) are not allowed"),
        ("base: {x: 1}\nb: {<<: {x: 2}}\n", "merge keys (<<) are not allowed here"),
        ("a: !!set {x}\n", "!!set values are not allowed here"),
        ("a: !!timestamp 2001-12-14\n", "timestamps are not allowed here"),
        ("a: !custom 1\n", "the tag !custom is not allowed here"),
        ("a: !!float x\n", "x is not a valid float"),
        ("a: !!bool maybe\n", "maybe is not a valid bool"),
        ("a: !!map x\n", "the tag !!map is not allowed here"),
        ("a: 1\na: 2\n", "duplicate key a"),
        ("--- 1\n--- 2\n", "expected a single document"),
        ("a: \x1f", "character #x001f is not allowed"),
        ("a: " + "1" * (MAX_INTEGER_DIGITS + 1), "an integer longer than"),
    ],
)
def test_unsafe_or_odd_yaml_is_one_yaml_file_error(text: str, problem: str) -> None:
    with pytest.raises(YamlFileError) as caught:
        parse_yaml(text)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_reader_collects_every_error_in_one_style() -> None:
    r = FieldReader("f.yaml")
    section = r.mapping({"a": "x", "zz": 1}, "top", ("a", "b"))

    def number(value: object) -> int:
        if not isinstance(value, int):
            raise Invalid("must be an integer")
        return value

    assert r.get(section, "top", "a", number, 7) == 7
    assert r.message() == (
        "f.yaml: top.zz: unknown key (expected one of a, b); top.a: must be an integer, got 'x'"
    )


def test_reader_caps_errors_and_values() -> None:
    r = FieldReader("f.yaml")
    for i in range(MAX_ERRORS_SHOWN + 5):
        r.error(f"k{i}", "must be short", "y" * 1000, show_value=True)
    message = r.message()
    assert message.count("must be short") == MAX_ERRORS_SHOWN
    assert message.endswith("; and 5 more errors")
    assert "y" * 41 not in message


def test_secret_reader_shows_types_not_values() -> None:
    r = FieldReader("web.yml", describe=describe_type)
    r.mapping("hunter2", "basic_auth_users", ())
    assert r.message() == "web.yml: basic_auth_users: must be a mapping, got string"
