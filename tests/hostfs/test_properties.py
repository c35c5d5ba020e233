"""hostfs.properties: CloudStack's template.properties, written and read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperv_agent.errors import BadTemplateProperties
from hyperv_agent.hostfs.properties import parse_template_properties, template_properties

EXPECTED_PROPERTIES = (
    "id=206\n"
    "filename=0b6f5c2e-6a1d-4c1e-9f0e-2d8c3a1b7e40.vhdx\n"
    "vhdx.filename=0b6f5c2e-6a1d-4c1e-9f0e-2d8c3a1b7e40.vhdx\n"
    "uniquename=206-2-73592258\n"
    "vhdx=true\n"
    "virtualsize=10737418240\n"
    "vhdx.virtualsize=10737418240\n"
    "size=4194304\n"
    "vhdx.size=4194304\n"
    "public=false\n"
)


def test_properties_follow_documented_order_when_template_is_written() -> None:
    text = template_properties(template_id=206, name="206-2-73592258",
                               file_name="0b6f5c2e-6a1d-4c1e-9f0e-2d8c3a1b7e40.vhdx",
                               image_format="VHDX", virtual_size_bytes=10737418240,
                               file_size_bytes=4194304)
    assert text == EXPECTED_PROPERTIES
    assert "\r" not in text
    text.encode("iso-8859-1")


def test_properties_round_trip_when_written_then_parsed() -> None:
    parsed = parse_template_properties(EXPECTED_PROPERTIES)
    assert list(parsed) == ["id", "filename", "vhdx.filename", "uniquename", "vhdx",
                            "virtualsize", "vhdx.virtualsize", "size", "vhdx.size", "public"]
    assert parsed["vhd" + "x.size"] == "4194304" and parsed["vhdx"] == "true"


@given(st.text(min_size=1, max_size=30))
def test_properties_round_trip_when_name_has_special_characters(name: str) -> None:
    text = template_properties(template_id=1, name=name, file_name="t.vhd",
                               image_format="vhd", virtual_size_bytes=2, file_size_bytes=3)
    text.encode("iso-8859-1")
    assert text.count("\n") == 10
    parsed = parse_template_properties(text)
    assert parsed["uniquename"] == name and parsed["filename"] == "t.vhd"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1\nb = 2\n", {"a": "1", "b": "2"}),
        ("a:1\r\nb 2\r\n", {"a": "1", "b": "2"}),
        ("# comment\n! other\n\n  a=1\n", {"a": "1"}),
        ("a=one \\\n   two\n", {"a": "one two"}),
        ("a=\\u0041\\t\\=\\\\\n", {"a": "A\t=\\"}),
        ("a\\ b=c\n", {"a b": "c"}),
        ("a=1\na=2\n", {"a": "2"}),
        ("a\n", {"a": ""}),
        ("a=#not-comment\n", {"a": "#not-comment"}),
        ("a=x\\\\\nb=y", {"a": "x\\", "b": "y"}),
    ],
    ids=["equals", "colon-space-crlf", "comments", "continuation", "escapes",
         "escaped-space-key", "last-wins", "key-only", "hash-in-value", "even-backslashes"],
)
def test_properties_are_read_when_text_uses_java_syntax(text: str,
                                                        expected: dict[str, str]) -> None:
    assert parse_template_properties(text) == expected


def test_properties_are_refused_when_unicode_escape_is_malformed() -> None:
    with pytest.raises(BadTemplateProperties):
        parse_template_properties("a=\\u12g4\n")


@pytest.mark.parametrize(
    ("image_format", "virtual_size", "file_size", "name", "file_name"),
    [("", 1, 1, "n", "n.vhd"), ("v/hd", 1, 1, "n", "n.vhd"), ("VHD", -1, 1, "n", "n.vhd"),
     ("VHD", 1, -1, "n", "n.vhd"), ("VHD", 1, 1, "", "n.vhd"), ("VHD", 1, 1, "n", ""),
     ("VHD", 1, 1, "n", "sub/n.vhd"), ("VHD", 1, 1, "n", "sub\\n.vhd")],
    ids=["empty-format", "format-with-slash", "negative-virtual", "negative-file", "no-name",
         "no-file-name", "file-name-with-slash", "file-name-with-backslash"],
)
def test_properties_are_refused_when_inputs_are_invalid(
    image_format: str, virtual_size: int, file_size: int, name: str, file_name: str
) -> None:
    with pytest.raises(BadTemplateProperties):
        template_properties(template_id=1, name=name, file_name=file_name,
                            image_format=image_format, virtual_size_bytes=virtual_size,
                            file_size_bytes=file_size)
