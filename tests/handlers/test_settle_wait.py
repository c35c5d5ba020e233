"""How long a command waits for a VM's state change: the job wait, within half of what
the management server waits for the answer."""

from __future__ import annotations

import pytest

from hyperv_agent.handlers.vm import settle_wait
from hyperv_agent.hyperv import jobs


@pytest.mark.parametrize(("job_s", "wait_s", "expected"), [
    (600.0, 0, 600.0),  # the MS's default 1800 s: the job wait fits in half of it
    (600.0, 3600, 600.0),
    (600.0, 60, 30.0),  # a command the MS waits 60 s for
    (3000.0, 0, 900.0),  # a job wait longer than the MS waits by default
])
def test_settle_wait_is_the_job_wait_within_half_the_commands_wait(
    job_s: float, wait_s: int, expected: float,
) -> None:
    job_wait = jobs.WaitPolicy(timeout_s=job_s, max_poll_s=0.5)
    bounded = settle_wait(job_wait, wait_s)
    assert bounded.timeout_s == expected
    assert bounded.max_poll_s == 0.5
