"""backend = "auto" on a Windows machine with the windows extra installed."""

from __future__ import annotations

from hyperv_agent.cim.localchoice import choose_for_this_host, pymi_problem


def test_pymi_imports_with_the_windows_extra() -> None:
    assert pymi_problem() is None


def test_auto_chooses_local_wmi() -> None:
    choice = choose_for_this_host()
    assert (choice.backend, choice.wsman_url) == ("wmi", None)
