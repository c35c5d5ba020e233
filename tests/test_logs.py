"""Log hygiene: escaped control characters, cut lines, redaction, tracebacks, throttling."""

from __future__ import annotations

import logging
import re

import pytest

from hyperv_agent import logs

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[[-0-9a-f]+\] ")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_control_characters_are_escaped_when_a_value_would_forge_a_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.setup("INFO")
    forged = "i-2-3-VM\n2030-01-01 00:00:00,000 INFO [-] hyperv_agent: forged\r\x1b[31m\u202e"
    logging.getLogger("hyperv_agent.test").info("stopping %s", forged)
    (line,) = _lines(capsys)
    assert LINE.match(line)
    assert "i-2-3-VM\\n2030-01-01" in line
    assert line.endswith("forged\\r\\x1b[31m\\u202e")


def test_long_values_are_cut_when_the_line_would_pass_8_kb(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.setup("INFO")
    logging.getLogger("hyperv_agent.test").info("vm=%s end", "é" * 50_000)
    (line,) = _lines(capsys)
    assert 8000 < len(line.encode()) <= 8192  # README: no line is longer than 8 KB
    assert "cut: the line had" in line and "end" not in line[-60:-40]


def test_secrets_are_redacted_before_the_line_is_cut(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("INFO")
    body = '{"url": "cifs://fs/share?user=a&password=s3cr3t", "vncPassword": "p4ss"}'
    logging.getLogger("hyperv_agent.test").info("body %s %s", body, "x" * 20_000)
    (line,) = _lines(capsys)
    assert "s3cr3t" not in line and "p4ss" not in line and logs.REDACTED in line


def test_a_password_with_punctuation_is_redacted_whole_also_as_gson_escapes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.setup("INFO")
    typed = "/primary?user=admin&password=Pa;sZ,w0'qK\\x&domain=LAB"
    gson = '{"path":"/primary?user\\u003dadmin\\u0026password\\u003dPa;sZ,w0\\u0027q\\"K'
    logging.getLogger("hyperv_agent.test").info("pool %s body %s\\u0026domain\\u003dLAB\"}",
                                                typed, gson)
    (line,) = _lines(capsys)
    assert not any(part in line for part in ("Pa;", "sZ,", "w0", "qK", '\\"K'))
    assert "password=*****&domain=LAB" in line and "password\\u003d*****\\u0026domain" in line


def test_traceback_lines_follow_their_record_marked_and_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.setup("INFO")
    try:
        raise ValueError("no VM x\n2030-01-01 00:00:00,000 INFO [-] forged password=hunter2")
    except ValueError:
        logging.getLogger("hyperv_agent.test").exception("failed")
    first, *rest = _lines(capsys)
    assert LINE.match(first) and first.endswith("failed")
    assert rest and all(line.startswith(logs.CONTINUATION) for line in rest)
    assert not any(LINE.match(line) for line in rest)
    assert "hunter2" not in "\n".join(rest)


def test_throttle_writes_one_line_per_key_per_interval_and_counts_the_rest() -> None:
    clock = FakeClock()
    throttle = logs.Throttle(interval_s=60, burst=3, clock=clock)
    assert throttle.admit("10.0.0.1") == ""
    assert [throttle.admit("10.0.0.1") for _ in range(5)] == [None] * 5
    assert throttle.admit("10.0.0.2") == ""
    assert throttle.admit("10.0.0.3") == ""
    assert throttle.admit("10.0.0.4") is None  # three lines this minute already
    clock.now += 61
    assert throttle.admit("10.0.0.1") == " (5 similar and 1 other lines held back)"
    assert throttle.admit("10.0.0.1") is None


def test_throttle_memory_stays_bounded_when_addresses_keep_changing() -> None:
    clock = FakeClock()
    throttle = logs.Throttle(interval_s=60, burst=5, clock=clock)
    written = 0
    for minute in range(100):
        for host in range(50):
            written += throttle.admit(f"10.{minute}.0.{host}") is not None
        clock.now += 61
    assert written == 100 * 5
    assert throttle.remembered <= 4 * 5
