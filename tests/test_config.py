"""Configuration files as operators write them: every mistake is one ConfigError naming
the file and the setting, never a traceback."""

from __future__ import annotations

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
