"""Hostile-input corpus against the ``volsr`` command line: how many cases break the contract.

Run: ``.venv/bin/python bench/hostile.py`` (about 2 minutes on 2 cores). Each case of
``tests/hostile/corpus.py`` writes its inputs into a fresh folder, runs ``volsr`` in its own
process (60 s timeout, 4 GiB address space) and is judged by
:func:`hostile.corpus.run_case`: a user error exits 2 with one stderr line and leaves no file;
a valid input exits 0; no file that existed before changes. Prints a Markdown table (cases
tried, refused cleanly, ok, data lost, tracebacks, hangs, segfaults, foreign reads) and one
line per failing case with what happened and the last stderr line. Each case runs in a fork
of one interpreter that imported volsr once (:class:`hostile.corpus.ForkServer`); ``--spawn``
starts the console script per case instead (slower: torch is imported every time).
``--only NAME ...`` runs some cases; ``--keep DIR`` keeps the case folders there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile.corpus import CASES, TIMEOUT_S, ConsoleScript, ForkServer, Outcome, run_case  # noqa: E402

COLUMNS = [("refused cleanly", "refused"), ("ok", "ok"), ("data lost", "data lost"),
           ("tracebacks", "traceback"), ("hangs", "hang"), ("segfaults", "segfault"),
           ("foreign reads", "foreign")]


def table(outcomes: list[Outcome]) -> list[str]:
    """The summary table and the per-failure lines, as Markdown lines."""
    failed = [o for o in outcomes if o.problems]
    header = ["cases tried", *(name for name, _ in COLUMNS), "failing cases"]
    counts = [len(outcomes), *(sum(kind in o.kinds for o in outcomes) for _, kind in COLUMNS), len(failed)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             "| " + " | ".join(str(c) for c in counts) + " |", ""]
    if failed:
        lines.append("Failing cases:")
        lines.append("")
    for outcome in failed:
        code = "timeout" if outcome.returncode is None else f"exit {outcome.returncode}"
        last = outcome.last_line.replace("`", "'")[:240]
        lines.append(f"- {outcome.name} ({code}): {'; '.join(outcome.problems)}; last stderr line: `{last}`")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these cases")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds before a hang")
    parser.add_argument("--keep", metavar="DIR", help="keep the case folders under DIR")
    parser.add_argument("--spawn", action="store_true", help="start the console script per case")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.only or c.name in args.only]
    print(f"command: {' '.join(['python', 'bench/hostile.py', *sys.argv[1:]])}\n")
    launcher = ConsoleScript() if args.spawn else ForkServer()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="volsr-hostile-") as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        outcomes = []
        for case in cases:
            outcomes.append(run_case(case, root, launcher, timeout=args.timeout))
            print(f"  {case.name}: {'PASS' if not outcomes[-1].problems else 'FAIL'} "
                  f"({outcomes[-1].seconds:.1f} s)", file=sys.stderr, flush=True)
    launcher.close()
    print("\n".join(table(outcomes)))
    print(f"\n{len(cases)} cases in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
