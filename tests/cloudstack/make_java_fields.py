"""Write ``java_fields.json``: the fields Gson serialises for each Java class the agent
models, read from a CloudStack source checkout.

    python -m tests.cloudstack.make_java_fields /path/to/cloudstack [FQCN ...]

Without class names it refreshes the classes already in the fixture. For each class it
records its superclass and every instance field Gson writes (static and transient fields
left out; none of these classes uses ``@Since``, ``@Until`` or ``@SerializedName``), with
the declared Java type and the JSON kind that type takes on the wire. Superclasses are
followed to the root. The tests read only the JSON; this script is how it was made.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FIXTURE = Path(__file__).parent / "java_fields.json"

_INTEGERS = frozenset({"int", "long", "short", "byte", "Integer", "Long", "Short", "Byte"})
_NUMBERS = frozenset({"double", "float", "Double", "Float"})
_BOOLEANS = frozenset({"boolean", "Boolean"})
# Written as strings: plain strings, and the types GsonHelper gives a string adapter.
_STRINGS = frozenset({"String", "char", "Character", "URI", "Date", "HypervisorType",
                      "StoragePoolType"})
_ARRAYS = frozenset({"List", "ArrayList", "Set", "HashSet", "Collection"})
_MAPS = frozenset({"Map", "HashMap", "TreeMap", "LinkedHashMap"})
_WRAPPED = frozenset({"DataTO", "DataStoreTO"})
_MODIFIERS = frozenset({"public", "private", "protected", "static", "final", "transient",
                        "volatile"})
_ANNOTATION = re.compile(r"@[\w.]+\s*(\((?:[^()]|\([^()]*\))*\))?")


@dataclass(frozen=True)
class Source:
    """A CloudStack checkout read through git (HEAD), never its work tree."""

    root: Path

    def files(self) -> list[str]:
        listed = self._git("ls-tree", "-r", "--name-only", "HEAD").split()
        return [name for name in listed if name.endswith(".java") and "/src/main/java/" in name]

    def text(self, path: str) -> str:
        return self._git("show", f"HEAD:{path}")

    def commit(self) -> str:
        return self._git("rev-parse", "HEAD").strip()

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), *args], capture_output=True,
                              text=True, check=True).stdout


class Reader:
    """Finds classes by name and reads their fields."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.by_suffix = {name.split("/src/main/java/", 1)[1]: name for name in source.files()}

    def path(self, fqcn: str) -> str | None:
        return self.by_suffix.get(fqcn.split("$")[0].replace(".", "/") + ".java")

    def read(self, fqcn: str) -> dict[str, object] | None:
        path = self.path(fqcn)
        if path is None:
            return None
        text = _strip(self.source.text(path))
        package = re.search(r"package\s+([\w.]+)\s*;", text)
        body, header = text, ""
        for name in [fqcn.split("$")[0].rsplit(".", 1)[1], *fqcn.split("$")[1:]]:
            header, body = _class_body(body, name)
        parent = re.search(r"\bextends\s+([\w.]+)", header)
        context = (text, package[1] if package else "")
        fields = {name: {"type": java_type, "kind": self.kind(java_type, context)}
                  for name, java_type in _fields(body)}
        return {"path": path, "extends": self.resolve(parent[1], context) if parent else None,
                "fields": fields}

    def resolve(self, simple: str, context: tuple[str, str]) -> str | None:
        """The FQCN of a class named in a file: by its imports, then its package."""
        text, package = context
        outer, _, inner = simple.split("<")[0].strip().partition(".")
        imported = re.search(rf"import\s+([\w.]+\.{re.escape(outer)})\s*;", text)
        base = imported[1] if imported else f"{package}.{outer}"
        while base and self.path(base) is None and "." in base:
            head, _, tail = base.rpartition(".")  # a nested class imported by its full name
            base, inner = head, f"{tail}.{inner}" if inner else tail
        if self.path(base) is None:
            return None
        return base + ("$" + inner.replace(".", "$") if inner else "")

    def kind(self, java_type: str, context: tuple[str, str]) -> str:
        """The JSON kind Gson gives a value of ``java_type``."""
        bare = java_type.split("<")[0].strip()
        last = bare.rsplit(".", 1)[-1]
        simple_kinds = ((_INTEGERS, "integer"), (_NUMBERS, "number"), (_BOOLEANS, "boolean"),
                        (_STRINGS, "string"), (_MAPS, "object"), (_WRAPPED, "wrapped"))
        if java_type.endswith("[]") or last in _ARRAYS:
            return "array"
        for names, kind in simple_kinds:
            if last in names:
                return kind
        if len(last) == 1 or last == "Object":
            return "any"  # a type parameter (Pair<T, U>) or Object
        if re.search(rf"\benum\s+{re.escape(last)}\b", context[0]):
            return "enum"  # declared in the same file
        return "enum" if self._is_enum(bare, context) else "object"

    def _is_enum(self, name: str, context: tuple[str, str]) -> bool:
        fqcn = self.resolve(name, context)
        path = self.path(fqcn) if fqcn else None
        if fqcn is None or path is None:
            return False
        return re.search(rf"\benum\s+{re.escape(fqcn.rsplit('$', 1)[-1].rsplit('.', 1)[-1])}\b",
                         _strip(self.source.text(path))) is not None


def _strip(text: str) -> str:
    """Java text without comments, and with string and char literals emptied (one pass, so
    a ``//`` inside a string is not taken for a comment)."""
    return _TOKENS.sub(lambda m: m[0][0] * 2 if m[0][0] in "\"'" else " ", text)


_TOKENS = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', re.S)


def _matching_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError("unbalanced braces")


def _class_body(text: str, name: str) -> tuple[str, str]:
    found = re.search(rf"\b(?:class|enum|interface)\s+{re.escape(name)}\b([^{{]*)\{{", text)
    if found is None:
        raise ValueError(f"no class {name}")
    start = found.end() - 1
    return found[1], text[start + 1:_matching_brace(text, start)]


def _statements(body: str) -> list[str]:
    """The member declarations of a class body; method, constructor, initializer and nested
    class bodies are skipped, field initializers kept."""
    found: list[str] = []
    current, index = "", 0
    while index < len(body):
        char = body[index]
        if char == "{":
            end = _matching_brace(body, index)
            current = current + body[index:end + 1] if _assigns(current) else ""
            index = end + 1
            continue
        if char == ";":
            found.append(current.strip())
            current = ""
        else:
            current += char
        index += 1
    return found


def _assigns(text: str) -> bool:
    depth = 0
    for index, char in enumerate(text):
        depth += {"(": 1, "<": 1, ")": -1, ">": -1}.get(char, 0)
        if char == "=" and depth == 0 and text[index + 1:index + 2] != "=" \
                and text[index - 1:index] not in ("!", "<", ">", "="):
            return True
    return False


def _split(text: str, separator: str) -> list[str]:
    parts, current, depth = [], "", 0
    for char in text:
        depth += {"(": 1, "<": 1, "[": 1, "{": 1, ")": -1, ">": -1, "]": -1, "}": -1}.get(char, 0)
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _fields(body: str) -> list[tuple[str, str]]:
    """(name, declared type) of every instance field Gson serialises."""
    found: list[tuple[str, str]] = []
    for statement in _statements(body):
        declarators = _split(_ANNOTATION.sub(" ", statement).strip(), ",")
        head = _split(declarators[0], "=")[0].strip()
        words = head.split()
        if "(" in head or not words or {"class", "interface", "enum"} & set(words):
            continue
        if {"static", "transient"} & set(words):
            continue
        declared = re.match(r"(.*\S)\s+(\w+)\s*((?:\[\])*)$",
                            " ".join(w for w in words if w not in _MODIFIERS))
        if declared is None:
            continue
        java_type = re.sub(r"\s*([<>,])\s*", r"\1", declared[1]).replace(",", ", ") + declared[3]
        names = [declared[2]] + [_split(d, "=")[0].strip() for d in declarators[1:]]
        found += [(name, java_type) for name in names if re.fullmatch(r"\w+", name)]
    return found


def main(argv: list[str]) -> None:
    source = Source(Path(argv[0]))
    reader = Reader(source)
    old = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {"classes": {}}
    pending = argv[1:] or list(old["classes"])
    classes: dict[str, object] = {}
    while pending:
        fqcn = pending.pop(0)
        if fqcn in classes:
            continue
        read = reader.read(fqcn)
        if read is None:
            raise SystemExit(f"no class {fqcn} in {source.root}")
        classes[fqcn] = read
        parent = read["extends"]
        if isinstance(parent, str):
            pending.append(parent)
    document = {"source": "apache/cloudstack", "commit": source.commit(),
                "classes": dict(sorted(classes.items()))}
    FIXTURE.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
