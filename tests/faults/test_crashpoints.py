"""The crash-point hook: off by default, SIGKILL at exactly the named point and hit when armed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.faults

PROGRAM = """
from mshale_fl.crashpoints import crash_point
for hit in range(1, 4):
    crash_point("elsewhere")
    print("before", hit, flush=True)
    crash_point("here")
    print("after", hit, flush=True)
"""


def _run(crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "MSHALE_TEST_CRASH_AT"}
    if crash_at is not None:
        env["MSHALE_TEST_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60)


def test_without_the_variable_nothing_happens() -> None:
    result = _run(None)
    assert result.returncode == 0 and result.stdout.split("\n")[-2] == "after 3"


@pytest.mark.parametrize(("spec", "survived"), [("here", 0), ("here@2", 1), ("here@3", 2)])
def test_the_nth_arrival_at_the_point_is_a_sigkill_with_a_line_saying_where(spec: str, survived: int) -> None:
    result = _run(spec)
    assert result.returncode == -signal.SIGKILL
    hit = survived + 1
    assert result.stdout.split() == [word for n in range(1, hit) for word in ("before", str(n), "after", str(n))] + ["before", str(hit)]
    assert result.stderr.strip() == f"mshale-fl crash point here (hit {hit}): SIGKILL"


def test_a_point_never_reached_never_fires() -> None:
    result = _run("there@1")
    assert result.returncode == 0 and "crash point" not in result.stderr
