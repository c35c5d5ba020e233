"""CloudStack's template.properties: written next to a template made from a volume, read
as java.util.Properties text. Pure string work, no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hyperv_agent.errors import BadTemplateProperties
from hyperv_agent.hostfs.locations import quoted

_EXTENSION = re.compile(r"[a-z0-9]+")


def template_properties(
    *,
    template_id: int,
    name: str,
    file_name: str,
    image_format: str,
    virtual_size_bytes: int,
    file_size_bytes: int,
) -> str:
    """The text of template.properties for a template made from a volume (protocol §11 order).

    ``name`` is the TemplateObjectTO ``name`` (N, the template's unique name),
    ``file_name`` the name of the template's file in the folder, ``image_format`` its
    format (VHD, VHDX). The secondary storage VM's template sync (TemplateLocation) finds
    the template by ``uniquename`` and sets its install path to the folder plus
    ``filename``, so ``filename`` and ``<ext>.filename`` name the file itself (the C#
    agent wrote ``<name>.<ext>`` there, a file that does not exist). Lines end in
    ``\\n``; values are escaped as java.util.Properties does, so the text is ISO-8859-1
    safe. Raises BadTemplateProperties for a bad format, size or file name.
    """
    ext = image_format.strip().lower()
    if not _EXTENSION.fullmatch(ext):
        raise BadTemplateProperties(f"image format {quoted(image_format)} is not a file type")
    if virtual_size_bytes < 0 or file_size_bytes < 0:
        raise BadTemplateProperties("template sizes must not be negative")
    if not name:
        raise BadTemplateProperties("template name is empty")
    if not file_name or "/" in file_name or "\\" in file_name:
        raise BadTemplateProperties(f"template file name {quoted(file_name)} is not a file "
                                    "name in the template's folder")
    entries = _template_entries(template_id, name, file_name, ext, virtual_size_bytes,
                                file_size_bytes)
    return "".join(f"{_escape(key, True)}={_escape(value, False)}\n" for key, value in entries)


def _template_entries(
    template_id: int, name: str, file_name: str, ext: str, virtual_size_bytes: int,
    file_size_bytes: int,
) -> tuple[tuple[str, str], ...]:
    return (
        ("id", str(template_id)), ("filename", file_name), (f"{ext}.filename", file_name),
        ("uniquename", name), (ext, "true"),
        ("virtualsize", str(virtual_size_bytes)), (f"{ext}.virtualsize", str(virtual_size_bytes)),
        ("size", str(file_size_bytes)), (f"{ext}.size", str(file_size_bytes)),
        ("public", "false"),
    )  # fmt: skip


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}
_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_ESCAPE_SEQUENCE = re.compile(r"\\(u[0-9A-Fa-f]{4}|u|.|$)", re.DOTALL)


def _escape(text: str, is_key: bool) -> str:
    out: list[str] = []
    for index, ch in enumerate(text):
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif (ch == " " and (is_key or index == 0)) or ch in "=:#!":
            out.append("\\" + ch)
        elif not " " <= ch <= "~":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else _surrogates(ch))
        else:
            out.append(ch)
    return "".join(out)


def _surrogates(ch: str) -> str:
    pair = ch.encode("utf-16-be")
    return "".join(f"\\u{int.from_bytes(pair[i : i + 2], 'big'):04x}" for i in (0, 2))


def parse_template_properties(text: str) -> dict[str, str]:
    """Read java.util.Properties text: comments, ``=``/``:``/space separators, escapes,
    continuation lines. A repeated key keeps its last value. Raises BadTemplateProperties
    for a malformed ``\\uXXXX`` escape."""
    entries: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split_entry(line)
        entries[key] = value
    return entries


def _logical_lines(text: str) -> Iterator[str]:
    pending: str | None = None
    for raw in text.splitlines():
        line = raw.lstrip(" \t\f")
        if pending is None and (not line or line[0] in "#!"):
            continue
        pending = line if pending is None else pending + line
        if _continues(pending):
            pending = pending[:-1]
            continue
        yield pending
        pending = None
    if pending:
        yield pending


def _continues(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def _split_entry(line: str) -> tuple[str, str]:
    index, escaped = 0, False
    while index < len(line):
        ch = line[index]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "=: \t\f":
            break
        index += 1
    rest = line[index:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return _unescape(line[:index]), _unescape(rest)


def _unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "u":
            raise BadTemplateProperties("template.properties has a malformed \\uXXXX escape")
        if len(code) == 5:
            return chr(int(code[1:], 16))
        return _UNESCAPES.get(code, code)

    decoded = _ESCAPE_SEQUENCE.sub(replace, text)
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
