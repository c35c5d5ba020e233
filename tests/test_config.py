"""Configuration files as operators write them: every mistake is one ConfigError naming
the file and the setting, never a traceback."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from hyperv_agent.config import load_config
from hyperv_agent.errors import ConfigError


@pytest.mark.parametrize("text, section, kind", [
    ('agent = "emulator"\n', "agent", "str"),
    ("agent = 5\n", "agent", "int"),
    ('wsman = ["https://hv01:5986/wsman"]\n', "wsman", "list"),
])
def test_a_section_written_as_a_value_is_one_error_naming_it(
        tmp_path: Path, text: str, section: str, kind: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"invalid config file {path}: {section}: a table is expected")
    assert kind in message and "\n" not in message


# --- the documents' configuration samples --------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: A commented-out setting: "# key = value" (a bare or quoted key), as an operator uncomments.
_COMMENTED_SETTING = re.compile(r"^(\s*)# ((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*') = .*)$")


def _toml_blocks() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in re.finditer(r"```toml\n(.*?)```", text, re.S):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{document.name}:{line}", textwrap.dedent(match.group(1))))
    return found


def _variants(block: str) -> list[tuple[str, str]]:
    """The block as written, with each commented-out setting uncommented on its own, and
    with all of them uncommented."""
    lines = block.splitlines()
    commented = [i for i, line in enumerate(lines) if _COMMENTED_SETTING.match(line)]

    def uncomment(indexes: list[int]) -> str:
        return "\n".join(_COMMENTED_SETTING.sub(r"\1\2", line) if i in indexes else line
                         for i, line in enumerate(lines)) + "\n"

    return [("as written", block), *((f"uncommented: {lines[i].strip()}", uncomment([i]))
                                     for i in commented),
            ("all uncommented", uncomment(commented))]


@pytest.mark.parametrize("where, block", _toml_blocks(), ids=[w for w, _ in _toml_blocks()])
def test_every_documented_sample_loads_as_written_and_with_its_comments_taken_out(
        tmp_path: Path, where: str, block: str) -> None:
    # The files the samples name are the operator's: they are made here, where a setting
    # reads its file when the configuration is loaded (a password file).
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "smb.pw").write_text("secret\n")
    problems = []
    for variant, text in _variants(block):
        path = tmp_path / "agent.toml"
        path.write_text(text.replace("/etc/hyperv-agent/", f"{etc}/"))
        try:
            load_config(path)
        except ConfigError as error:
            problems.append(f"{variant}: {error}")
    assert not problems, f"{where}:\n" + "\n".join(problems)
