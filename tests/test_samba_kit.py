"""The Samba test server's fixture helper: where smbd cannot run, a test is skipped, except
in CI, where that is a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import samba


def test_a_machine_without_smbd_skips_the_test(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samba, "find_smbd", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"), \
            samba.running_samba(tmp_path):
        pytest.fail("smbd was reported running")


def test_ci_without_smbd_fails_the_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samba, "find_smbd", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed"), \
            samba.running_samba(tmp_path):
        pytest.fail("smbd was reported running")
