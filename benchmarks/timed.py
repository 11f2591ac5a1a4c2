"""Run a command under /usr/bin/time -v: wall time, CPU time and peak memory (benchmarks)."""

from __future__ import annotations

import re
import subprocess


def run_timed(command: list[str], env: dict | None = None, what: str = "command") -> dict:
    """wall_s, cpu_s (user + sys, waited-for children included) and peak_rss_mb (the
    largest single process of the tree) of `command`; RuntimeError with its stderr tail."""
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr.strip()[-500:]}")
    return parse_time_v(done.stderr)


def parse_time_v(stderr: str) -> dict:
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", stderr)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss_kb = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)[1])
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", stderr)[1])
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", stderr)[1])
    return {
        "wall_s": hours * 3600 + minutes * 60 + seconds,
        "cpu_s": user + system,
        "peak_rss_mb": rss_kb / 1024,
    }
