"""`synccurate report` on simulated scores tables of growing size (prints figures; asserts nothing).

    python benchmarks/report_scale.py [--rows 100 10000 1000000] [--folder DIR] [--keep]

Each table has every column `synccurate score` writes, with the list columns at full
length: `p_t` and `onscreen` hold n_frames − 4 values per ok clip (clips of 2–18 s at
25 fps: 246 values on average) and `profile` 31. It is written in row groups of 65,536
rows so generating it never holds more than one group in memory (the 1M-row table is
~250 M floats of p_t). The data set is shifted by one frame as a whole (median offset +1),
3 % of clips fail (no_face / no_audio / decode_error), 1 % are scored again later (a
second row with a later `scored_at`, which the report must drop).

The clips do not exist, so the thumbnails are placeholders: the figures measure reading,
summarising and rendering, not video decoding (at most 4 × `--worst` clips are decoded in
a real run, in 4 threads).

Each report runs in a fresh process; printed: rows, Parquet size, wall time split into
load (scalar columns) / summarise / lists (p_t, profile of the listed clips) / render,
HTML size, the process's CPU seconds (user + system, including imports: a figure that
does not depend on how busy the machine is) and its peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GROUP_ROWS = 65_536
MAX_OFFSET = 15
ROOT = "/data/talks"

STAGES = r"""
import json, resource, sys, time
from pathlib import Path
start = time.perf_counter()
from synccurate.curate import filtering
from synccurate.curate import report
imported = time.perf_counter()
scores = report.load(sys.argv[1])
loaded = time.perf_counter()
summary = report.summarise(scores)
summarised = time.perf_counter()
positions = summary["_positions"]
picked = sorted({p for items in positions.values() for p in items})
rows = scores.table.iloc[picked].copy()
rows.index = picked
rows["reasons"] = filtering.reject_reasons(rows, filtering.FilterRules())
lists = report.read_lists(scores, rows)
listed = time.perf_counter()
files = [str(filtering.clip_path(r, p)) for r, p in zip(rows["root"], rows["path"])]
page = report.render(summary, sys.argv[1], rows, lists, report.thumbnails(files), positions)
Path(sys.argv[2]).write_text(page, encoding="utf-8")
done = time.perf_counter()
print(json.dumps({
    "import": imported - start, "load": loaded - imported, "summarise": summarised - loaded,
    "lists": listed - summarised, "render": done - listed, "total": done - imported,
    "clips": summary["n_clips"], "dropped": summary["duplicates_dropped"],
    "kept": summary["thresholds"]["kept_at_defaults"],
    "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "cpu": (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(resource.RUSAGE_SELF)),
}))
"""


def _lists(lengths: np.ndarray, values: np.ndarray, missing: np.ndarray) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=pa.array(missing))


def row_group(rng: np.random.Generator, first: int, n: int, scored_at: np.datetime64) -> pa.Table:
    """n simulated rows, clips number `first` … first + n − 1."""
    status = rng.choice(
        ["ok", "no_face", "no_audio", "decode_error"], size=n, p=[0.97, 0.015, 0.01, 0.005]
    )
    ok = status == "ok"
    paths = [f"speaker{(first + i) % 997:03d}/clip{first + i:08d}.mp4" for i in range(n)]
    messages = {"no_face": "a face in only 31% of frames", "no_audio": "no audio stream"}
    messages["decode_error"] = "moov atom not found"
    error = [
        None if s == "ok" else f"{ROOT}/{p}: {messages[s]}"
        for s, p in zip(status, paths, strict=True)
    ]
    duration = rng.uniform(2.0, 18.0, n)
    n_frames = np.round(duration * 25).astype(np.int64)
    windows = np.where(ok, n_frames - 4, 0)
    offset = np.clip(np.round(rng.normal(1.0, 1.5, n)), -MAX_OFFSET, MAX_OFFSET).astype(np.int64)
    wild = rng.random(n) < 0.01  # a few clips anywhere in the window
    offset[wild] = rng.integers(-MAX_OFFSET, MAX_OFFSET + 1, wild.sum())
    prob = rng.beta(6, 2, n)
    total = int(windows.sum())
    p_t = np.clip(np.repeat(prob, windows) + rng.normal(0, 0.15, total), 0, 1).round(4)
    k = np.arange(-MAX_OFFSET, MAX_OFFSET + 1)
    profile = 0.1 + 0.5 * np.exp(-0.5 * ((k[None, :] - offset[:, None]) / 1.5) ** 2)
    profile = (profile + rng.normal(0, 0.03, profile.shape)).round(4)

    def masked(values: np.ndarray) -> pa.Array:
        return pa.array(values, mask=~ok)

    return pa.table(
        {
            "root": pa.array([ROOT] * n, pa.string()),
            "path": pa.array(paths, pa.string()),
            "status": pa.array(status, pa.string()),
            "error": pa.array(error, pa.string()),
            "duration_s": duration,
            "n_frames": n_frames,
            "source_fps": np.full(n, 25.0),
            "offset_frames": masked(offset),
            "offset_seconds": masked(offset / 25),
            "prob_at_offset": masked(prob),
            "offscreen_ratio": masked(rng.beta(1, 9, n)),
            "confidence": masked(rng.uniform(0, 0.8, n)),
            "face_ratio": np.where(ok, rng.uniform(0.6, 1, n), rng.uniform(0, 0.5, n)),
            "silence_ratio": rng.beta(2, 8, n),
            "at_search_edge": masked(np.abs(offset) == MAX_OFFSET),
            "model": pa.array(["icsyncnet-small@1a2b3c4d"] * n, pa.string()),
            "face_detector": pa.array(["face-alignment"] * n, pa.string()),
            "p_t": _lists(windows, p_t, ~ok),
            "onscreen": _lists(windows, p_t > 0.5, ~ok),
            "profile": _lists(np.full(n, len(k)), profile.ravel(), ~ok),
            "scored_at": pa.array(np.full(n, scored_at), pa.timestamp("us", tz="UTC")),
        }
    )


def build(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    first_time = np.datetime64("2025-06-01T00:00:00", "us")
    rescored = rows // 100
    writer = None
    try:
        for first in range(0, rows - rescored, GROUP_ROWS):
            n = min(GROUP_ROWS, rows - rescored - first)
            table = row_group(rng, first, n, first_time)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if rescored:  # clips scored again a day later: same paths, newer rows
            again = rng.choice(rows - rescored, rescored, replace=False)
            for start in range(0, rescored, GROUP_ROWS):
                chunk = np.sort(again[start : start + GROUP_ROWS])
                later = row_group(rng, 0, len(chunk), first_time + np.timedelta64(1, "D"))
                paths = [f"speaker{i % 997:03d}/clip{i:08d}.mp4" for i in chunk]
                later = later.set_column(1, "path", pa.array(paths, pa.string()))
                writer.write_table(later)
    finally:
        if writer:
            writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 10_000, 1_000_000])
    parser.add_argument("--folder", type=Path, default=None, help="Where tables go (tmp).")
    parser.add_argument("--keep", action="store_true", help="Keep the tables and reports.")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="report_scale."))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"tables and reports in {folder}")
    print(
        f"{'rows':>9} {'parquet':>9} {'build s':>8} │ {'load':>6} {'summ.':>6} {'lists':>6} "
        f"{'render':>6} {'total s':>7} {'cpu s':>5} │ {'html KiB':>8} {'peak MiB':>8}"
    )
    try:
        for rows in args.rows:
            table, page = folder / f"scores_{rows}.parquet", folder / f"report_{rows}.html"
            start = time.perf_counter()
            build(table, rows)
            built = time.perf_counter() - start
            result = subprocess.run(
                [sys.executable, "-c", STAGES, str(table), str(page)],
                capture_output=True,
                text=True,
                check=True,
            )
            t = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"{rows:>9,} {table.stat().st_size / 2**20:>7.1f}Mi {built:>8.1f} │ "
                f"{t['load']:>6.2f} {t['summarise']:>6.2f} {t['lists']:>6.2f} {t['render']:>6.2f} "
                f"{t['total']:>7.2f} {t['cpu']:>5.1f} │ "
                f"{page.stat().st_size / 1024:>8.0f} {t['max_rss_mb']:>8.0f}"
                f"   ({t['clips']:,} clips after dropping {t['dropped']:,} older rows; "
                f"{t['kept']:,} kept at the defaults)",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
