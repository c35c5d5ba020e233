"""Check results and how ``doctor`` prints them: one line per check, the fix on the line."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"  # works, with a limit or a risk worth fixing
    FAIL = "FAIL"  # the agent cannot work (or cannot work fully) until it is fixed
    SKIP = "skip"  # not run: an earlier check failed, or it does not apply


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was found, and for WARN and FAIL how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``status name detail[ -> fix: fix]`` on one line, whatever the texts held."""
        text = f"{self.status.value:<5} {self.name:<18} {_flat(self.detail)}"
        if self.fix and self.status in (Status.WARN, Status.FAIL):
            text += f" -> fix: {_flat(self.fix)}"
        return text


def _flat(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    @property
    def passed(self) -> bool:
        return all(check.status is not Status.FAIL for check in self.checks)

    def failed(self) -> list[str]:
        return [check.name for check in self.checks if check.status is Status.FAIL]

    def text(self) -> str:
        return "\n".join(check.line() for check in self.checks)
