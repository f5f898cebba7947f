"""Keep CPU cores busy, to run the suite (or anything) on a loaded machine.

One busy process per core: ``-n`` of them (default: every core, ``os.cpu_count()``), for
``-t`` seconds (default: until killed). SIGTERM or SIGINT stops the workers and exits 0;
a worker whose parent is gone (even SIGKILLed) stops by itself within a fraction of a
second, so no busy orphan outlives the hog.

    .venv/bin/python bench/cpu_hog.py              # every core, until killed
    .venv/bin/python bench/cpu_hog.py -n 1 -t 60   # one core for a minute

``bench/stress_suite.sh`` runs the test suite beside it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def _burn(deadline: float | None, parent: int) -> None:
    """A worker: spin until the deadline, or until the parent is gone."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; ^C reaches it too
    x = 1
    while True:
        for _ in range(100_000):  # a few milliseconds of pure CPU between checks
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if os.getppid() != parent:
            os._exit(0)
        if deadline is not None and time.monotonic() >= deadline:
            os._exit(0)


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _positive_float(text: str) -> float:
    t = float(text)
    if not t > 0:
        raise argparse.ArgumentTypeError("must be a number of seconds > 0")
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Keep N cores busy (one busy process per core).")
    ap.add_argument("-n", "--cores", type=_positive_int, default=os.cpu_count() or 1,
                    help="busy processes to run (default: every core, %(default)s here)")
    ap.add_argument("-t", "--seconds", type=_positive_float, default=None,
                    help="stop after this many seconds (default: run until killed)")
    args = ap.parse_args(argv)

    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    parent = os.getpid()
    workers: list[int] = []
    for _ in range(args.cores):
        pid = os.fork()
        if pid == 0:
            try:
                _burn(deadline, parent)
            finally:
                os._exit(0)
        workers.append(pid)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    how_long = "until killed" if args.seconds is None else f"for {args.seconds:g} s"
    print(f"cpu_hog: {args.cores} busy process(es) {how_long} (pid {parent}, workers "
          f"{' '.join(map(str, workers))})", file=sys.stderr, flush=True)
    try:
        while workers:
            pid, _ = os.wait()  # the workers end by themselves at the deadline
            workers.remove(pid)
    except SystemExit:
        pass
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
