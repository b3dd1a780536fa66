"""Time ``skdict`` subcommands as a user runs them: wall time and peak memory.

Each command runs in its own process, so its peak resident set is the memory
the command needed, interpreter and imports included. Pages of a
memory-mapped input that were read count too, so it is an upper bound.

The peak is the process's own ``VmHWM`` (``/proc/self/status``), read as it
exits: ``ru_maxrss`` of a child started from this (large) process starts at
this process's resident set, since Linux records the forked address space's
high-water mark when the child execs.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_RUNNER = """
import os, sys
from skdict.cli import main
try:
    code = main(sys.argv[1:])
finally:
    with open("/proc/self/status") as status, open(os.environ["SKDICT_HWM"], "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM")).split()[1])
sys.exit(code)
"""


def run_command(argv, *, env=None):
    """Run ``skdict *argv``; return ``(seconds, peak_rss_gb, stdout)``.

    Raises RuntimeError with the command's stderr if it fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        env = {**(os.environ if env is None else env), "SKDICT_HWM": str(hwm)}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _RUNNER, *map(str, argv)],
                              capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"skdict {' '.join(map(str, argv))} failed: {proc.stderr}")
        return seconds, int(hwm.read_text()) * 1024 / 1e9, proc.stdout


def time_commands(commands, *, log=print):
    """Run each ``(label, argv)`` in turn, quietly; return ``{label: (seconds, peak_rss_gb)}``."""
    results = {}
    for label, argv in commands:
        seconds, rss, _ = run_command([*argv, "--quiet"])
        results[label] = (seconds, rss)
        log(f"  {label:<28} {seconds:8.1f} s  {rss:6.2f} GB")
    return results
