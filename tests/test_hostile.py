"""Hostile inputs ("Never lose data, never read what it should not"): the CLI contract holds.

Every case of ``tests/hostile/corpus.py`` runs in its own process with a timeout and an
address-space limit, and must: exit 2 with one stderr line, no traceback and no file left
behind (a refusal), or exit 0 (a valid input); never change a file that existed before the
run; never succeed on data outside the files it was given. The processes are forks of one
interpreter that imported volsr once (:class:`hostile.corpus.ForkServer`: about 1 s per case
instead of 3); one test checks that a fork judges a case exactly as the console script does.
The whole file takes about 70 s on 2 cores (``bench/hostile.py`` prints the same as a table).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # whatever pytest's import mode

from hostile.corpus import CASES, Case, ConsoleScript, ForkServer, run_case  # noqa: E402


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    launcher = ForkServer()
    yield launcher
    launcher.close()


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_hostile_input_keeps_the_contract(case: Case, server: ForkServer, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path, server)
    assert not outcome.problems, (
        f"{case.name}: {'; '.join(outcome.problems)}\n--- stderr ---\n{outcome.stderr[-3000:]}"
    )


def test_corpus_is_large_and_named_uniquely() -> None:
    names = [case.name for case in CASES]
    assert len(names) >= 45
    assert len(set(names)) == len(names)
    assert {case.expect for case in CASES} <= {"refused", "ok", "either"}


def test_a_fork_judges_like_the_console_script(server: ForkServer, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == "h5-scalar")  # refused while reading: cheap
    forked = run_case(case, tmp_path / "fork", server)
    spawned = run_case(case, tmp_path / "spawn", ConsoleScript())
    assert (forked.returncode, forked.problems) == (spawned.returncode, spawned.problems)
    assert forked.stderr.replace("/fork/", "/spawn/") == spawned.stderr
