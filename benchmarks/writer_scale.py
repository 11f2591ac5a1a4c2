"""Scores store at a million clips: writer speed, resume cost, writer memory (prints figures).

    python benchmarks/writer_scale.py [--rows 1000000] [--folder DIR] [--lists]

Rows go through the real `store.PartsWriter` without decoding any video. They look like
the driver's rows: every scalar column filled, `p_t` and `onscreen` with ~250 entries
(a 10 s clip), `profile` with 31; as NumPy arrays (what the models' metrics
give the driver) or, with --lists, as Python lists (what any other caller may pass).

(a) writer throughput over --rows rows: rows/s of CPU and of wall time spent inside
    add()/close(), and that time as a share of a run scoring 20 clips/s
    (goals: >= 20,000 rows/s, <= 1 %);
(b) resuming from that folder: read_keys and done_keys in a fresh process, seconds and
    peak RSS (goals: <= 2 s, <= 1.5 GB); then the same for the layout a 20 clips/s run
    leaves (a part every 60 s: 1,200-row parts), before and after `compact`;
(c) peak RSS of a writer process after 1k, 10k and 100k rows (goal: flat within 10 %),
    with pyarrow's default memory pool (mimalloc keeps freed buffers) and the system one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from synccurate.store import parts as store

CLIPS_PER_SECOND = 20  # a scoring run this fast is the reference for the writer's share
POOL = 1024  # distinct list values to draw rows from (fresh Python objects for every row)


class Rows:
    """Realistic score rows, each with its own list objects (as the driver makes them)."""

    def __init__(self, arrays: bool, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.lengths = rng.integers(230, 271, POOL)
        self.p_t = rng.random((POOL, 270)).round(4)
        self.onscreen = rng.random((POOL, 270)) > 0.2
        self.profile = rng.random((POOL, 31)).round(4)
        self.arrays = arrays

    def row(self, i: int) -> dict:
        k = i % POOL
        n = int(self.lengths[k])
        lists = (self.p_t[k, :n], self.onscreen[k, :n], self.profile[k])
        p_t, onscreen, profile = (
            (a.copy() for a in lists) if self.arrays else (a.tolist() for a in lists)
        )
        return {
            "root": "/data/lrs3/pretrain",
            "path": f"speaker{i % 5000:05d}/clip_{i:08d}.mp4",
            "status": "ok",
            "error": None,
            "duration_s": n / 25 + 0.16,
            "n_frames": n + 4,
            "source_fps": 25.0,
            "offset_frames": int(k % 31) - 15,
            "offset_seconds": (int(k % 31) - 15) / 25,
            "prob_at_offset": float(p_t[0]),
            "offscreen_ratio": 0.1,
            "confidence": 0.4,
            "face_ratio": 1.0,
            "silence_ratio": 0.05,
            "at_search_edge": False,
            "model": "icsyncnet@0123abcd",
            "face_detector": "face-alignment",
            "p_t": p_t,
            "onscreen": onscreen,
            "profile": profile,
        }


def write_rows(folder: Path, n: int, arrays: bool, part_rows: int) -> dict:
    rows = Rows(arrays)
    writer = store.PartsWriter(
        folder,
        metadata={"model": "icsyncnet@0123abcd", "max_offset": 15},
        rows_per_part=part_rows,
        seconds_per_part=1e9,  # parts by row count only, whatever the machine's speed
    )
    cpu = wall = 0.0
    for i in range(n):
        row = rows.row(i)  # making the row is the driver's cost, not the writer's
        c, w = time.process_time(), time.perf_counter()
        writer.add(row)
        cpu += time.process_time() - c
        wall += time.perf_counter() - w
    c, w = time.process_time(), time.perf_counter()
    writer.close()
    cpu += time.process_time() - c
    wall += time.perf_counter() - w
    size = sum(p.stat().st_size for p in writer.parts)
    return {"rows": n, "cpu": cpu, "wall": wall, "parts": len(writer.parts), "bytes": size}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(call) -> tuple[object, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def child(mode: str, folder: str, n: int, arrays: bool, part_rows: int) -> None:
    """Runs in a fresh process so that its peak RSS is its own."""
    from synccurate.store import readers

    if mode == "resume":
        keys, keys_cpu, keys_wall = timed(lambda: readers.read_keys(folder))
        del keys
        done, done_cpu, done_wall = timed(lambda: readers.done_keys(folder))
        result = {"keys": len(done), "read_keys": (keys_cpu, keys_wall)}
        result["done_keys"] = (done_cpu, done_wall)
        result["parts"] = len(readers.list_parts(folder))
    elif mode == "compact":
        _, cpu, wall = timed(lambda: readers.compact(folder))
        result = {"compact": (cpu, wall)}
    else:
        result = write_rows(Path(folder), n, arrays, part_rows)
    print(json.dumps(result | {"peak_rss_mb": peak_rss_mb()}))


def run_child(
    mode: str,
    folder: Path,
    n: int = 0,
    arrays: bool = False,
    part_rows: int = store.ROWS_PER_PART,
    pool: str | None = None,
) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--folder", str(folder)]
    command += ["--rows", str(n), "--part-rows", str(part_rows)]
    output = subprocess.run(
        command + ([] if arrays else ["--lists"]),
        check=True,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            **({"ARROW_DEFAULT_MEMORY_POOL": pool} if pool else {}),
        },
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


SLOW_RUN_PART_ROWS = CLIPS_PER_SECOND * int(store.SECONDS_PER_PART)  # 1,200


def resume(folder: Path, label: str) -> None:
    b = run_child("resume", folder)
    (keys_cpu, keys_wall), (done_cpu, done_wall) = b["read_keys"], b["done_keys"]
    print(
        f"{label}: {b['keys']:,} rows in {b['parts']} parts: "
        f"read_keys {keys_cpu:.2f} s CPU / {keys_wall:.2f} s wall, "
        f"done_keys {done_cpu:.2f} s CPU / {done_wall:.2f} s wall, "
        f"peak RSS {b['peak_rss_mb']:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, help="Where to write (default: a temp folder).")
    parser.add_argument("--lists", action="store_true", help="List columns as Python lists.")
    parser.add_argument("--part-rows", type=int, default=store.ROWS_PER_PART)
    parser.add_argument("--child", choices=["resume", "write", "compact"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, str(args.folder), args.rows, not args.lists, args.part_rows)
        return
    base = args.folder or Path(tempfile.mkdtemp(prefix="writer_scale_"))
    kind = "Python lists" if args.lists else "NumPy arrays"
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    try:
        folder = base / "scores.parquet"
        a = run_child("write", folder, args.rows, not args.lists)
        per_row_cpu = a["cpu"] / a["rows"]
        print(
            f"(a) {a['rows']:,} rows ({kind}) → {a['parts']} parts, "
            f"{a['bytes'] / a['rows']:.0f} B/row on disk: "
            f"{a['rows'] / a['cpu']:,.0f} rows/s CPU, {a['rows'] / a['wall']:,.0f} rows/s wall; "
            f"{per_row_cpu * 1e6:.1f} µs CPU per row = "
            f"{per_row_cpu * CLIPS_PER_SECOND:.2%} of a {CLIPS_PER_SECOND} clips/s run; "
            f"writer peak RSS {a['peak_rss_mb']:.0f} MB"
        )
        resume(folder, "(b) fast-run layout")
        slow = base / "slow.parquet"
        run_child("write", slow, args.rows, not args.lists, part_rows=SLOW_RUN_PART_ROWS)
        resume(slow, f"(b) 20 clips/s layout, {SLOW_RUN_PART_ROWS:,}-row parts")
        c = run_child("compact", slow)
        cpu, wall = c["compact"]
        peak = c["peak_rss_mb"]
        print(f"    compact: {cpu:.1f} s CPU, {wall:.1f} s wall, peak RSS {peak:.0f} MB")
        resume(slow, "(b) after compact")
        shutil.rmtree(slow)
        for pool in (None, "system"):
            peaks = {}
            for n in (1_000, 10_000, 100_000):
                target = base / f"mem_{n}"
                peaks[n] = run_child("write", target, n, not args.lists, pool=pool)["peak_rss_mb"]
                shutil.rmtree(target)
            low, high = min(peaks.values()), max(peaks.values())
            shown = ", ".join(f"{n:,} rows {mb:.0f} MB" for n, mb in peaks.items())
            label = f"ARROW_DEFAULT_MEMORY_POOL={pool}" if pool else "pyarrow's default pool"
            print(f"(c) writer peak RSS, {label}: {shown} (spread {(high - low) / low:.1%})")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        if args.folder is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
