"""Mutation check of the test suite (not part of CI): does a small bug in critical code fail a test?

Each mutation changes one line of production code (a file, an exact fragment of one line,
its replacement). For every mutation the script copies the repository (tracked and
untracked-but-not-ignored files) into a temporary folder once, applies the mutation there,
runs the test files mapped to the mutated area with ``pytest -x -q`` (with a timeout),
restores the file, and records whether a test failed (caught) or not (survived).

Two modes, because some tests use the real clips of the sibling ``../shared`` folder and
skip without them:

- with shared: the copy gets a ``shared`` symlink next to it (pointing at the real one);
- without shared: the symlink is absent, as on a machine that has only the repository.

``--mode both`` (the default) runs each mutant without shared first; a mutant caught there is
caught with shared too (the same tests run, plus the real-clip ones), so only the survivors
are run again with shared.

    python benchmarks/mutation_check.py                  # all mutants, both modes
    python benchmarks/mutation_check.py --mode without   # one mode
    python benchmarks/mutation_check.py --only sync-sigma,fix-min-abs
    python benchmarks/mutation_check.py --check          # fragments still found? (no tests run)
    python benchmarks/mutation_check.py --json results.json

Run it with the project's virtual environment's python; it uses the same interpreter for
pytest. Expect a long run on a small machine (minutes per mutant): run it in the background.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# --- which test files can catch a bug in which area (missing files are skipped) ---------------
# Fast, targeted files first: pytest -x stops at the first failure.
TESTS = {
    "sync": ["test_sync.py", "test_sync_spec.py", "test_score.py", "test_scoring.py"],
    "audio": [
        "test_audio.py",
        "test_synth.py",
        "test_fix_synthetic.py",
        "test_scoring.py",
        "test_score.py",
        "test_fix.py",
    ],
    "filtering": ["test_filtering.py", "test_cli.py"],
    "fix": ["test_fix.py", "test_fix_synthetic.py", "test_cli.py"],
    "score": ["test_score.py", "test_resume.py", "test_scoring.py"],
    "faces": ["test_faces.py", "test_scoring.py", "test_score.py"],
    "evaluate": ["test_evaluate.py", "test_end_to_end.py"],
    "train": ["test_train.py"],
    "timeline": ["test_timeline.py"],
    "store": ["test_store.py", "test_score.py", "test_store_pins_and_shards.py"],
    "v2": ["test_models_parity.py", "test_models_scoring.py", "test_v2_known_answers.py"],
    # issue 22: known-answer tests of the areas where planted bugs got through
    "v2-known": ["test_v2_known_answers.py", "test_models_parity.py", "test_models_scoring.py"],
    "faces-known": ["test_faces_known_answers.py", "test_faces.py"],
    "speaker": ["test_faces_known_answers.py", "test_score.py", "test_scoring.py"],
    "fix-known": ["test_fix_outputs.py", "test_fix.py", "test_fix_synthetic.py", "test_cli.py"],
    "layout": ["test_fix_outputs.py", "test_filtering.py", "test_fix.py", "test_cli.py"],
    "store-known": ["test_store_pins_and_shards.py", "test_store.py", "test_resume.py"],
    "shards": ["test_store_pins_and_shards.py", "test_store.py", "test_score.py"],
    # what curators filter on besides sync (face size, jitter, frozen frames, yaw, speech)
    "curation": ["test_curation_columns.py"],
    # long recordings in chunks: the numbers of whole-clip scoring, bounded buffers, breaks
    "streaming": ["test_streaming.py", "test_truncated_long.py"],
    # raw videos: every shot's faces scored, a shut mouth in a pause is nobody's turn
    "segments": ["test_segments.py", "test_raw_to_clips.py", "test_faces.py"],
}


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository
    original: str  # an exact fragment that occurs exactly once in the file
    replacement: str
    tests: str  # key of TESTS
    what: str  # the bug it stands for


def m(name, file, original, replacement, tests, what) -> Mutation:
    return Mutation(name, f"synccurate/{file}", original, replacement, tests, what)


MUTATIONS = [
    # --- SPEC §7 metrics (sync.py) ------------------------------------------------------------
    m("sync-sigma", "models/sync.py", "SMOOTH_SIGMA = 2.0", "SMOOTH_SIGMA = 3.0", "sync",
      "Gaussian smoothing sigma 3 instead of 2"),
    m("sync-radius", "models/sync.py", "SMOOTH_RADIUS = 4", "SMOOTH_RADIUS = 3", "sync",
      "Gaussian truncated at 3 instead of 4"),
    m("sync-kernel", "models/sync.py", "np.exp(-0.5 * (taps / SMOOTH_SIGMA) ** 2)",
      "np.exp(-((taps / SMOOTH_SIGMA) ** 2))", "sync", "Gaussian kernel without the 1/2"),
    m("sync-renorm", "models/sync.py", "return num / den[:, None]", "return num / kernel.sum()",
      "sync", "truncated kernel not renormalised at the ends"),
    m("sync-no-smooth", "models/sync.py",
      "smooth = _gaussian_smooth(S[:, near].astype(np.float64))",
      "smooth = S[:, near].astype(np.float64)", "sync",
      "no smoothing of S"),
    m("sync-onscreen-threshold", "models/sync.py", "labels = p > 0.5", "labels = p > 0.4", "sync",
      "on-screen threshold 0.4"),
    m("sync-onscreen-ge", "models/sync.py", "labels = p > 0.5", "labels = p >= 0.5", "sync",
      "on-screen threshold inclusive"),
    m("sync-chunk", "models/sync.py", "CHUNK_THRESHOLD = 0.7", "CHUNK_THRESHOLD = 0.6", "sync",
      "chunk threshold 0.6"),
    m("sync-chunk-min", "models/sync.py", "p[start:stop].mean() < CHUNK_THRESHOLD",
      "p[start:stop].min() < CHUNK_THRESHOLD", "sync", "chunk rule on the minimum, not the mean"),
    m("sync-min-run", "models/sync.py", "MIN_RUN = 4", "MIN_RUN = 3", "sync", "short runs < 3"),
    m("sync-island", "models/sync.py", "runs[i][0] = runs[i - 1][0]", "runs[i][0] = False", "sync",
      "islands only ever become off-screen"),
    m("sync-archipelago", "models/sync.py", "if j - i >= 2:", "if j - i >= 3:", "sync",
      "archipelagos need three short runs"),
    m("sync-near", "models/sync.py",
      "near = slice(max(0, column - 1), min(S.shape[1], column + 2))",
      "near = slice(column, column + 1)", "sync", "p_t only at k*, not k*±1"),
    m("sync-prob-formula", "models/sync.py", "prob_at_offset=float(probability(c_t.mean())),",
      "prob_at_offset=float(np.mean(probability(c_t))),", "sync",
      "prob_at_offset = mean of sigmoids"),
    m("sync-prob-tau", "models/sync.py",
      "probability = lambda similarity: 1 / (1 + np.exp(-similarity / tau))",
      "probability = lambda similarity: 1 / (1 + np.exp(-similarity))", "sync",
      "prob_at_offset without the temperature"),
    m("sync-edge", "models/sync.py", "at_search_edge=abs(offset) == K,",
      "at_search_edge=abs(offset) >= K - 1,", "sync", "at_search_edge one frame early"),
    m("sync-confidence", "models/sync.py", "confidence=float(profile.max() - np.median(profile)),",
      "confidence=float(profile.max() - profile.mean()),", "sync", "confidence max - mean"),
    m("sync-profile-mask", "models/sync.py",
      "S[rows][valid[rows]].astype(np.float64).sum(0) for rows",
      "S[rows].astype(np.float64).sum(0) for rows",
      "sync", "offset profile over face-less windows too"),
    m("sync-pt-mask", "models/sync.py",
      "p_t = np.where(valid, probs[np.arange(len(S)), pick], 0.0)",
      "p_t = probs[np.arange(len(S)), pick]", "sync", "p_t of face-less windows kept"),
    m("sync-ct-mask", "models/sync.py", "c_t = smooth[np.arange(len(S)), pick][valid]",
      "c_t = smooth[np.arange(len(S)), pick]", "sync",
      "prob_at_offset over face-less windows too"),
    m("sync-offscreen-valid", "models/sync.py", "offscreen_ratio=float(1 - onscreen.mean()),",
      "offscreen_ratio=float(1 - onscreen[valid].mean()),", "sync",
      "off-screen ratio ignores face-less windows"),
    m("sync-best-offset-sign", "models/sync.py",
      "return int(np.argmax(profile)) - (len(profile) - 1) // 2",
      "return (len(profile) - 1) // 2 - int(np.argmax(profile))", "sync", "offset sign flipped"),
    # --- audio.py ----------------------------------------------------------------------------
    m("audio-silence-inverted", "io/audio.py", "np.maximum(rms, 1e-10)) < SILENCE_DBFS",
      "np.maximum(rms, 1e-10)) > SILENCE_DBFS", "audio", "silent frames inverted"),
    m("audio-silence-level", "io/audio.py", "SILENCE_DBFS = -40.0", "SILENCE_DBFS = -20.0", "audio",
      "silence threshold -20 dBFS"),
    m("audio-mel-round", "io/audio.py", "return (np.asarray(frame) * MEL_FPS) // VIDEO_FPS",
      "return np.round(np.asarray(frame) * MEL_FPS / VIDEO_FPS).astype(int)", "audio",
      "mel index rounded, not truncated"),
    m("audio-no-context", "io/audio.py", "return mel_index(frames) - CONTEXT_MELS",
      "return mel_index(frames)", "audio", "audio window not centred on the visual window"),
    m("audio-pad-zero", "io/audio.py",
      "stretch = np.full((mel.shape[0], high - low), MEL_SILENCE, dtype=mel.dtype)",
      "stretch = np.full((mel.shape[0], high - low), 0.0, dtype=mel.dtype)",
      "audio", "windows padded with 0 instead of silence"),
    m("audio-stretch-shifted", "io/audio.py",
      "stretch[:, start - low : stop - low] = mel[:, start:stop]",
      "stretch[:, start - low : stop - low] = mel[:, start + 1 : stop + 1]",
      "audio", "audio windows cut one mel frame late"),
    m("timeline-step-strict", "pipeline/timeline.py",
      "if abs(smooth[i] - smooth[i - 1]) >= STEP_FRAMES",
      "if abs(smooth[i] - smooth[i - 1]) > STEP_FRAMES", "timeline",
      "an edit of exactly two frames is no step"),
    m("timeline-drift-unit", "pipeline/timeline.py",
      'columns["drift_ms_per_min"] = slope * SECONDS_PER_MINUTE',
      'columns["drift_ms_per_min"] = slope', "timeline", "drift in ms per second"),
    m("timeline-confident-any", "pipeline/timeline.py",
      'return stretch["prob_at_offset"] >= MIN_PROB', "return True", "timeline",
      "stretches nobody speaks in count for drift and steps"),
    m("sync-block-edge", "models/sync.py",
      "t = torch.arange(start, min(T, start + SIMILARITY_BLOCK), device=visual.device)",
      "t = torch.arange(start, min(T, start + SIMILARITY_BLOCK - 1), device=visual.device)",
      "sync", "a row of S lost at every block edge (long clips)"),
    m("audio-preemphasis", "io/audio.py", "PREEMPHASIS = 0.97", "PREEMPHASIS = 0.0", "audio",
      "no pre-emphasis"),
    m("audio-delay-off-by-one", "io/audio.py", "out[shift:] = samples[: n - shift]",
      "out[shift + 1 :] = samples[: n - shift - 1]", "audio", "delay one sample too long"),
    m("audio-advance-off-by-one", "io/audio.py", "out[: n + shift] = samples[-shift:]",
      "out[: n + shift - 1] = samples[-shift + 1 :]", "audio", "advance one sample too far"),
    # --- fix.py: the audio shift -------------------------------------------------------------
    m("fix-min-abs", "curate/fix.py",
      'action = "fix" if line is not None or abs(shift) >= min_abs_offset else "copy"',
      'action = "fix" if line is not None or abs(shift) > min_abs_offset else "copy"', "fix",
      "|offset| = 1 copied instead of fixed"),
    m("fix-shift-sign", "curate/fix.py",
      "return shift, delay_samples(source, shift), constant",
      "return shift, delay_samples(source, -shift), constant", "fix",
      "audio advanced instead of delayed"),
    m("fix-shift-amount", "curate/fix.py",
      "return round(Fraction(int(offset_frames) * int(sample_rate), VIDEO_FPS))",
      "return round(Fraction(int(offset_frames) * int(sample_rate), 24))", "fix",
      "shift computed at 24 fps"),
    m("fix-no-timeline", "curate/fix.py",
      "lead = round(_timing(path, info).lead_s * rate) if info.has_video else 0",
      "lead = 0", "fix", "decoded audio not placed on the video timeline"),
    # --- filtering.py -------------------------------------------------------------------------
    m("filter-prob-strict", "curate/filtering.py", "~distance_rows & ~(prob >= rules.min_prob)",
      "~distance_rows & ~(prob > rules.min_prob)", "filtering", "prob == P_min rejected"),
    m("filter-offscreen-strict", "curate/filtering.py",
      "~distance_rows & ~(offscreen <= rules.max_offscreen)",
      "~distance_rows & ~(offscreen < rules.max_offscreen)", "filtering",
      "offscreen == R_max rejected"),
    m("filter-abs-offset", "curate/filtering.py",
      'distance = np.abs(numeric(table, "offset_frames") - rules.reference_offset)',
      'distance = numeric(table, "offset_frames") - rules.reference_offset', "filtering",
      "negative offsets never too large"),
    m("filter-silence", "curate/filtering.py", "~(silence <= rules.max_silence)",
      "~(silence >= rules.max_silence)", "filtering", "silence rule inverted"),
    m("filter-status", "curate/filtering.py", "if not ok[i]:", "if False:", "filtering",
      "failed rows judged by their (missing) metrics"),
    # --- score.py: table, resume, workers, faces, columns ------------------------------------
    m("score-rescore-all", "pipeline/driver.py",
      "todo = [ref for ref in refs if (ref.root, ref.path) not in done]", "todo = list(refs)",
      "score", "a rerun scores every clip again"),
    m("score-done-by-path", "store/readers.py",
      'return set(zip(_python_strings(table["root"]), table["path"].to_pylist(), strict=True))',
      'return {("", p) for p in table["path"].to_pylist()}', "score",
      "done-ness keyed by the relative path only"),
    m("score-retry-ignored", "store/readers.py", "    if retry_failed:\n", "    if False:\n",
      "score", "--retry-failed ignored"),
    m("score-retry-all", "store/readers.py",
      'table = table.filter(pc.equal(table["status"], "ok"))',
      "table = table.slice(0, 0)", "score", "--retry-failed rescores ok rows too"),
    m("score-mixed-models", "store/folder.py", "    if keys:\n        raise ValueError(",
      "    if False:\n        raise ValueError(", "score", "refusal to mix models removed"),
    m("score-workers-drop", "pipeline/executors/local.py", "item = queue.popleft()",
      "item = queue.popleft() if len(queue) % 2 else (queue.popleft(), queue.popleft())[1]",
      "score", "worker path drops every other queued clip"),
    m("score-min-face-ratio", "pipeline/prepare.py", "MIN_FACE_RATIO = 0.5", "MIN_FACE_RATIO = 0.3",
      "score", "no_face below 30 % instead of 50 %"),
    m("score-no-face-ratio-rule", "pipeline/prepare.py",
      "if face_ratio < MIN_FACE_RATIO or not any_window:",
      "if not any_window:", "score", "no_face ratio rule dropped"),
    m("score-no-face-window-rule", "pipeline/prepare.py",
      "if face_ratio < MIN_FACE_RATIO or not any_window:",
      "if face_ratio < MIN_FACE_RATIO:", "score",
      "no_face rule ignores windows of five face frames"),
    m("score-face-windows-any", "pipeline/prepare.py",
      "return np.all([has_face[i : i + T] for i in range(audio.WINDOW_FRAMES)], axis=0)",
      "return np.any([has_face[i : i + T] for i in range(audio.WINDOW_FRAMES)], axis=0)",
      "score", "a window needs one face frame, not five"),
    m("score-mask-dropped", "pipeline/driver.py",
      "valid = {i: face_windows(_track_faces(clip, i), clip.n_windows) for i in matrices}",
      "valid = {i: np.ones(clip.n_windows, bool) for i in matrices}",
      "score", "face mask not passed to the metrics"),
    m("score-face-ratio-constant", "pipeline/driver.py",
      '"face_ratio": float(clip.has_face.mean()) if clip.has_face is not None else None,',
      '"face_ratio": 1.0 if clip.has_face is not None else None,', "score", "face_ratio constant"),
    m("score-silence-inverted", "pipeline/driver.py",
      '"silence_ratio": float(clip.silence.mean()) if clip.silence is not None else None,',
      '"silence_ratio": float(1 - clip.silence.mean()) if clip.silence is not None else None,',
      "score", "silence_ratio inverted"),
    m("score-edge-column", "models/icsyncnet.py", '"at_search_edge": metrics.at_search_edge,',
      '"at_search_edge": False,', "score", "at_search_edge column always False"),
    m("score-onscreen-column", "models/icsyncnet.py",
      '"onscreen": np.asarray(metrics.onscreen, dtype=bool),',
      '"onscreen": ~np.asarray(metrics.onscreen, dtype=bool),', "score",
      "onscreen column inverted"),
    m("score-offscreen-column", "models/icsyncnet.py",
      '"offscreen_ratio": metrics.offscreen_ratio,',
      '"offscreen_ratio": 1 - metrics.offscreen_ratio,', "score", "offscreen_ratio inverted"),
    # --- faces.py: box scaling between the passes --------------------------------------------
    m("faces-crop-scale", "faces/extract.py",
      "to_crop_frame = np.array([crop_frame_hw[1] / width, crop_frame_hw[0] / height] * 2)",
      "to_crop_frame = np.ones(4)", "faces", "boxes not scaled to the crop pass's frame"),
    m("faces-detect-scale", "faces/extract.py",
      "to_source = np.array([width / detect_hw[1], height / detect_hw[0]] * 2)",
      "to_source = np.ones(4)", "faces", "detections not scaled back to the source frame"),
    # --- evaluate.py -------------------------------------------------------------------------
    m("eval-tolerance", "training/evaluate.py", "TOLERANCE = 1  #", "TOLERANCE = 2  #", "evaluate",
      "±2 frames counted correct"),
    m("eval-sign", "training/evaluate.py",
      "correct += int(((predicted - truth).abs() <= TOLERANCE).sum())",
      "correct += int(((predicted + truth).abs() <= TOLERANCE).sum())", "evaluate",
      "truth compared with the wrong sign"),
    m("eval-predicted-sign", "training/evaluate.py",
      "predicted = means.argmax(1) - (S.shape[1] - 1) // 2",
      "predicted = (S.shape[1] - 1) // 2 - means.argmax(1)", "evaluate",
      "predicted offset sign flipped"),
    m("eval-truth", "training/evaluate.py",
      'return refs, [int(x) for x in table["true_offset_frames"]]',
      'return refs, [-int(x) for x in table["true_offset_frames"]]', "evaluate",
      "manifest offsets read with the wrong sign"),
    # --- train.py: hard negatives ------------------------------------------------------------
    m("train-hard-min", "training/train.py", "HARD_SHIFT_MIN = 2", "HARD_SHIFT_MIN = 1", "train",
      "hard negatives at |s| = 1"),
    m("train-hard-rule", "training/train.py", "if abs(s) >= HARD_SHIFT_MIN and 0 <= t + s < T",
      "if abs(s) > HARD_SHIFT_MIN and 0 <= t + s < T", "train", "hard negatives from |s| = 3"),
    m("train-hard-max", "training/train.py", "HARD_SHIFT_MAX = MAX_OFFSET",
      "HARD_SHIFT_MAX = MAX_OFFSET - 3", "train", "hard negatives only up to |s| = 12"),
    # --- store.py: list columns; score.py: CPU batch bound; cli.py: SIGTERM --------------------
    m("store-list-offsets", "store/schema.py", "np.cumsum(lengths, out=offsets[1:])",
      "np.cumsum(lengths[::-1], out=offsets[1:])", "store", "list offsets in the wrong order"),
    m("store-list-nulls", "store/schema.py", "mask=missing if missing.true_count else None",
      "mask=None", "store", "a null list becomes an empty one"),
    m("store-list-nan", "store/schema.py", "pa.array(flat, type=kind.value_type, from_pandas=True)",
      "pa.array(flat, type=kind.value_type)", "store", "NaN values kept instead of null"),
    m("score-batch-bound", "pipeline/batching.py",
      "return max(1, min(own, CPU_BATCH_BYTES // activation_bytes_per_window(model)))",
      "return own", "score", "CPU batch not bounded by memory"),
    m("score-batch-inputs", "pipeline/batching.py", "tensors = [*inputs, output]",
      "tensors = [output]", "score", "a layer's input left out of its working set"),
    m("cli-sigterm", "cli/scoring.py", "    with terminated_as_exit(), bar:", "    with bar:",
      "score", "SIGTERM kills the run without publishing its rows"),
    # --- audio.py: NumPy log-mel -------------------------------------------------------------
    m("audio-mel-area", "io/audio.py", "weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]",
      "weights *= (1.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]", "audio",
      "mel filters not area-normalised"),
    m("audio-hann", "io/audio.py", "np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)",
      "np.cos(2 * np.pi * np.arange(N_FFT) / (N_FFT - 1))", "audio",
      "symmetric instead of periodic Hann window"),
    m("audio-preemphasis-lag", "io/audio.py",
      "emphasised[1:] -= np.float32(PREEMPHASIS) * samples[:-1]",
      "emphasised[1:] -= np.float32(PREEMPHASIS) * samples[1:]", "audio",
      "pre-emphasis subtracts the sample itself"),
    # --- models/syncnet_v2.py: inference copy and medfilt ------------------------------------
    m("v2-fold-eps", "models/syncnet_v2.py",
      "scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)",
      "scale = norm.weight / torch.sqrt(norm.running_var)", "v2", "BatchNorm folded without eps"),
    m("v2-medfilt-pad", "models/syncnet_v2.py", "padded = np.pad(np.asarray(values), kernel // 2)",
      "padded = np.pad(np.asarray(values), kernel // 2, mode='edge')", "v2",
      "median filter pads with edge values instead of zeros"),
    # --- issue 22: SyncNet v2 statistics and crops (hand-built distances, a drawn face) -----
    m("v2-mdist-median", "models/syncnet_v2.py", "mdist = rows.mean(dim=0).numpy()",
      "mdist = rows.median(dim=0).values.numpy()", "v2-known",
      "per-offset distance is the median over windows, not the mean"),
    m("v2-conf-mean", "models/syncnet_v2.py", "median = np.median(mdist)",
      "median = np.mean(mdist)",
      "v2-known", "LSE-C and fconf from the mean of the profile, not its median"),
    m("v2-fconf-column", "models/syncnet_v2.py", "fdist = dists[:, best].numpy()",
      "fdist = dists[:, max_offset].numpy()", "v2-known", "fconf read at offset 0, not the best"),
    m("v2-fconf-unfiltered", "models/syncnet_v2.py",
      '"fconf": medfilt(median - fdist, FCONF_KERNEL),',
      '"fconf": median - fdist,', "v2-known", "fconf without the 9-window median filter"),
    m("v2-vote-lse-at-mean", "models/syncnet_v2.py", 'lse_d = float(summary["mdist"][K - offset])',
      'lse_d = float(summary["min_dist"])', "v2-known",
      "--offset-method vote: LSE-D read at the mean's offset"),
    m("v2-vote-mask", "models/syncnet_v2.py", "voted, share, _ = vote_offset(similarity, valid)",
      "voted, share, _ = vote_offset(similarity)", "v2-known", "face-less windows vote"),
    m("v2-mean-mask", "models/syncnet_v2.py", "rows = dists if valid is None else",
      "rows = dists if True else", "v2-known", "face-less windows in LSE-D / LSE-C"),
    m("v2-profile-order", "models/syncnet_v2.py", '"profile": (-summary["mdist"][::-1]).round(4),',
      '"profile": (-summary["mdist"]).round(4),', "v2-known",
      "profile column in upstream's order, not offset order"),
    m("v2-crop-rows", "models/syncnet_v2.py", "int(np.floor(y + half * (1 + 2 * CROP_SCALE)))",
      "int(np.floor(y + half * (1 + CROP_SCALE)))", "v2-known",
      "v2 crop reaches 1.4 half-sizes below the centre instead of 1.8"),
    m("v2-track-half-min", "models/syncnet_v2.py",
      "half = np.maximum(run[:, 2] - run[:, 0], run[:, 3] - run[:, 1]) / 2",
      "half = np.minimum(run[:, 2] - run[:, 0], run[:, 3] - run[:, 1]) / 2", "v2-known",
      "v2 track squared on the shorter side of the face box"),
    # --- issue 22: nested / overlapping boxes; the speaker as the second track -------------
    m("faces-nested-smallest-first", "faces/tracks.py",
      "key=lambda f: _area(np.asarray(f[:4])), reverse=True)",
      "key=lambda f: _area(np.asarray(f[:4])), reverse=False)", "faces-known",
      "nested boxes: the smallest one kept instead of the largest"),
    m("faces-nested-corner-rule", "faces/tracks.py",
      "(k[:2] <= centre).all() and (centre <= k[2:", "(k[:2] <= centre).all() or (centre <= k[2:",
      "faces-known", "a box right of / below a larger one counts as inside it"),
    m("faces-nested-top-left", "faces/tracks.py", "centre = (box[:2] + box[2:",
      "centre = (box[:2] + box[:2] + 0 * box[2:", "faces-known",
      "a face whose top-left corner overlaps another is dropped"),
    m("score-speaker-ratio-first", "pipeline/driver.py",
      "chosen = clip.tracks[track] if clip.tracks else None",
      "chosen = clip.tracks[0] if clip.tracks else None", "speaker",
      "face_ratio of the first track, not the speaker's"),
    m("score-tracks-ratio-speaker", "pipeline/driver.py",
      '"face_ratio": round(float(clip.tracks[i].has_face.mean()), 4),',
      '"face_ratio": round(float(clip.tracks[track].has_face.mean()), 4),', "speaker",
      "face_tracks gives every track the speaker's face_ratio"),
    m("score-row-over-metrics", "pipeline/driver.py", "return row | (metrics or {})",
      "return (metrics or {}) | row", "speaker",
      "the main face's face_ratio overrides the speaker's"),
    m("score-face-track-zero", "pipeline/driver.py", '"face_track": track,', '"face_track": 0,',
      "speaker", "face_track always 0"),
    m("score-view-main-mask", "pipeline/prepare.py",
      "(i, replace(self, crops=track.crops, has_face=track.has_face))",
      "(i, replace(self, crops=track.crops))", "speaker",
      "every track scored with the main face's frames"),
    # --- issue 22: fix / link-to layout, safety, reruns, codec delay ------------------------
    m("layout-third-root-collides", "curate/filtering.py", "        while name in used:",
      "        if name in used:", "layout",
      "a third root of the same name writes into the second's"),
    m("layout-from-subset", "curate/filtering.py", "unique = sorted(set(all_roots) | set(roots))",
      "unique = sorted(set(roots))", "layout", "layout decided by the kept rows, not the table"),
    m("link-layout-subset", "curate/filtering.py",
      "relative = mirror_paths(kept, layout_from=mirror_from)", "relative = mirror_paths(kept)",
      "layout", "--link-to lays out the kept clips unlike fix"),
    m("fix-symlink-target", "curate/fix.py", "if dst_entry in (src.resolve(), src_entry):",
      "if dst_entry == src_entry:", "fix-known",
      "an output where a symlinked input points is overwritten"),
    m("fix-reuse-deleted", "curate/fix.py", "        and (target.exists() or target.is_symlink())",
      "        and True", "fix-known", "a deleted output still in the log is not redone"),
    m("fix-compensation-sign", "curate/fix.py", "compensation += check", "compensation -= check",
      "fix-known", "codec delay compensated the wrong way"),
    m("fix-single-encode", "curate/fix.py", "MAX_ENCODES = 3", "MAX_ENCODES = 1", "fix-known",
      "a codec delay the container cannot signal is left in"),
    # --- issue 22: pinned max offset, legacy tables, shards --------------------------------
    m("store-max-offset-unpinned", "store/folder.py", 'PINNED = ("model", "max_offset")',
      'PINNED = ("model",)', "store-known", "a run with another --max-offset mixed in"),
    m("legacy-failed-rows-judged", "store/parts.py", 'keys.loc[keys["status"] == "ok", "model"]',
      'keys.loc[keys["status"] != "ok", "model"]', "store-known",
      "legacy table judged by its failed rows' model"),
    m("legacy-all-rows-judged", "store/parts.py", 'keys.loc[keys["status"] == "ok", "model"]',
      'keys["model"]', "store-known", "legacy table refused for failed rows of another model"),
    m("shard-file-name", "io/inputs.py", "return zlib.crc32(path.encode()) % count",
      'return zlib.crc32(path.rsplit("/", 1)[-1].encode()) % count', "shards",
      "shard by the file name alone"),
    m("shard-absolute-path", "io/inputs.py", "if shard_of(ref.path, count) == index]",
      "if shard_of(str(ref.file), count) == index]", "shards", "shard by the absolute path"),
    m("shards-status-absolute", "store/manifest.py", "index = shard_of(ref.path, count)",
      "index = shard_of(str(ref.file), count)", "shards",
      "`shards` counts clips in the shard of their absolute path"),
    # --- curation columns: face_px, track_jitter, frozen_ratio, yaw_deg, speech_ratio ------
    m("frozen-compare", "faces/quality.py",
      "frozen = np.asarray(changes, dtype=np.float64) <= FROZEN_TOLERANCE",
      "frozen = np.asarray(changes, dtype=np.float64) >= FROZEN_TOLERANCE", "curation",
      "moving frames counted as frozen"),
    m("frozen-tolerance", "faces/quality.py", "FROZEN_TOLERANCE = 0.05", "FROZEN_TOLERANCE = 0.5",
      "curation", "a tolerance that calls still faces frozen"),
    m("frozen-same-frame", "faces/extract.py",
      "track.changes[t] = quality.change_in_box(previous, frame, box)",
      "track.changes[t] = quality.change_in_box(frame, frame, box)", "curation",
      "a frame compared with itself"),
    m("face-px-width", "faces/quality.py", "return boxes[:, 3] - boxes[:, 1]",
      "return boxes[:, 2] - boxes[:, 0]", "curation", "face width instead of height"),
    m("face-px-detect-pixels", "faces/extract.py",
      "box = (*map(float, np.asarray(face[:4]) * to_source), float(face[4]))",
      "box = (*map(float, np.asarray(face[:4])), float(face[4]))", "curation",
      "boxes left in the small detection frame's pixels"),
    m("jitter-absolute", "faces/quality.py", "relative = moved / heights", "relative = moved",
      "curation", "jitter in pixels, not face heights"),
    m("yaw-depth", "faces/quality.py", "along[2] / half_width / YAW_NOSE_DEPTH",
      "along[2] / half_width * YAW_NOSE_DEPTH", "curation", "nose depth applied the wrong way"),
    m("yaw-track-column", "faces/tracks.py", "yaw[frames] = np.array(track.boxes)[:, 4]",
      "yaw[frames] = np.array(track.boxes)[:, 3]", "curation", "a box corner taken as the yaw"),
    m("speaker-main-face", "pipeline/driver.py",
      "faces = quality.track_columns(chosen) if chosen is not None else {}",
      "faces = quality.track_columns(clip.tracks[0]) if chosen is not None else {}", "curation",
      "the row describes the main face, not the speaker"),
    m("voicing-energy-only", "io/audio.py", "return periodic & ~frame_silence(samples, n_frames)",
      "return ~frame_silence(samples, n_frames)", "curation", "loud noise counted as speech"),
    m("voicing-threshold", "io/audio.py", "VOICING_THRESHOLD = 0.45", "VOICING_THRESHOLD = 0.1",
      "curation", "a voicing threshold noise passes"),
    m("speech-ratio-silence", "pipeline/driver.py",
      '"speech_ratio": float(clip.voiced.mean())', '"speech_ratio": float(1 - clip.silence.mean())',
      "curation", "speech_ratio = the loud frames"),
    m("filter-face-px-boundary", "curate/filtering.py",
      'numeric(table, "face_px") < rules.min_face_px',
      'numeric(table, "face_px") <= rules.min_face_px', "curation",
      "a face exactly at --min-face-px rejected"),
    m("filter-yaw-signed", "curate/filtering.py",
      'np.abs(numeric(table, "yaw_deg")) > rules.max_abs_yaw',
      'numeric(table, "yaw_deg") > rules.max_abs_yaw', "curation",
      "heads turned the other way pass --max-abs-yaw"),
    m("filter-frozen-null", "curate/filtering.py",
      "failures[REASON_FROZEN] = frozen > rules.max_frozen_ratio",
      "failures[REASON_FROZEN] = ~(frozen <= rules.max_frozen_ratio)", "curation",
      "rows without frozen_ratio rejected"),
    m("filter-cli-jitter", "cli/curation.py", "max_jitter=max_jitter,", "max_jitter=None,",
      "curation", "--max-jitter ignored"),
    m("frozen-denominator", "faces/quality.py",
      "return float((frozen & has_face).sum() / has_face.sum())",
      "return float((frozen & has_face).sum() / len(has_face))", "curation",
      "frozen_ratio over all frames, not the face's"),
    m("voicing-window-correction", "io/audio.py",
      "normalised = r[:, low : high + 1] / energy / _window_autocorrelation()[low : high + 1]",
      "normalised = r[:, low : high + 1] / energy", "curation",
      "long pitch periods penalised by the window"),
    m("report-scalar-columns", "curate/report.py",
      '    "yaw_deg",\n    "speech_ratio",\n    provenance',
      '    "yaw_deg",\n    provenance', "curation",
      "report never reads speech_ratio"),
    # --- long recordings in chunks (pipeline/streaming.py) -------------------------------------
    m("stream-feature-align", "pipeline/streaming.py", "FEATURE_ALIGN_FRAMES = 5",
      "FEATURE_ALIGN_FRAMES = 4", "streaming", "chunk features off the clip's mel grid"),
    m("stream-audio-reach", "pipeline/streaming.py", "AUDIO_REACH_FRAMES = 10",
      "AUDIO_REACH_FRAMES = 1", "streaming", "chunk features whose edge columns are used"),
    m("stream-no-forget", "pipeline/streaming.py", "        crops.forget_before(t0)",
      "        pass", "streaming", "a chunk's crops kept after it is embedded"),
    m("stream-no-lookahead", "pipeline/streaming.py",
      "crops.cut_to(t0 + 2 * chunk_frames + WINDOW_FRAMES)",
      "crops.cut_to(t0 + chunk_frames + WINDOW_FRAMES)", "streaming",
      "no chunk read ahead: the clip's end is not known in time"),
    m("stream-zero-before", "pipeline/batching.py", "    outside = window < 0",
      "    outside = window < -1", "streaming", "v2's zero audio starts a window late"),
    m("stream-truncated-unseen", "io/media.py",
      "if reached < declared.seconds - TRUNCATED_BY_S:", "if False:", "streaming",
      "a file that broke off passes as a shorter ok clip"),
    m("stream-reach-short", "pipeline/batching.py",
      'return getattr(model, "window_reach", SMOOTH_RADIUS)',
      'return getattr(model, "window_reach", SMOOTH_RADIUS) - 2', "streaming",
      "S rows a face window's smoothing reads are left NaN"),
    m("stream-chunk-needed", "pipeline/streaming.py",
      "_chunk_of(track_near, t0, t1) for track_near in near",
      "None for track_near in near", "streaming",
      "a chunk scores every row, a whole clip only those near a face"),
    m("stream-absent-crops-cut", "faces/extract.py",
      "if k == 0 or track.has_face[t : t + len(chunk)].any()", "if True", "streaming",
      "every track's crops cut in every block, face or not"),
    m("stream-absent-crops-held", "pipeline/streaming.py",
      "    if needed is not None and not needed.any():", "    if False:", "streaming",
      "a chunk hands a track crops none of its scored windows reads"),
    # --- raw videos to segments (faces/extract.py, pipeline/segments.py) ----------------------
    m("faces-cap-whole-video", "faces/extract.py",
      "at_most_at_once(tracks, max_faces)", "tracks[:max_faces]", "segments",
      "the face cap counts the whole video's tracks, not one frame's"),
    m("segments-pause-runs", "pipeline/segments.py",
      "        if not speech[start:stop].any():", "        if False:", "segments",
      "a shut mouth in an off-screen voice's pause extends the segment"),
]  # fmt: skip


# --- running ----------------------------------------------------------------------------------


def repo_files(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in out.split("\0") if name and (repo / name).is_file()]


def copy_repo(repo: Path, target: Path) -> None:
    for name in repo_files(repo):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, destination)


def test_files(copy: Path, key: str, override: str | None = None) -> list[str]:
    names = override.split(",") if override else [f"tests/{name}" for name in TESTS[key]]
    return [name for name in names if (copy / name).is_file()]


def uses_shared(copy: Path, files: list[str]) -> bool:
    """Whether any of the test files can see ../shared (they reach it through real_fixtures)."""
    return any("real_fixtures" in (copy / name).read_text() for name in files)


def run_pytest(copy: Path, files: list[str], timeout: float) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout', seconds, last output line)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("SYNCCURATE_WEIGHTS", None)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *files]
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # the whole session: pytest and whatever it started
        process.communicate()
        return "timeout", time.monotonic() - start, ""
    lines = [ln for ln in output.decode("utf-8", "replace").splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return ("passed" if process.returncode == 0 else "failed"), time.monotonic() - start, last


def set_shared(copy: Path, shared: Path | None) -> None:
    link = copy.parent / "shared"
    if link.is_symlink() or link.exists():
        link.unlink()
    if shared is not None:
        link.symlink_to(shared)


def apply(copy: Path, mutation: Mutation) -> str | None:
    """Mutate the copy; return the original text (None when the fragment is not found once)."""
    path = copy / mutation.file
    text = path.read_text()
    if text.count(mutation.original) != 1:
        return None
    mutated = text.replace(mutation.original, mutation.replacement)
    compile(mutated, str(path), "exec")  # a mutant must be valid Python
    path.write_text(mutated)
    return text


def check_fragments(repo: Path, mutations: list[Mutation] = MUTATIONS) -> list[str]:
    problems = []
    names = set()
    for mutation in mutations:
        if mutation.name in names:
            problems.append(f"{mutation.name}: duplicate name")
        names.add(mutation.name)
        count = (repo / mutation.file).read_text().count(mutation.original)
        if count != 1:
            problems.append(f"{mutation.name}: fragment found {count} times in {mutation.file}")
        if mutation.tests not in TESTS:
            problems.append(f"{mutation.name}: unknown test group {mutation.tests}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("both", "with", "without"), default="both")
    parser.add_argument("--only", help="comma-separated mutation names")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--check", action="store_true", help="only check the fragments")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the run of the unmutated code"
    )
    parser.add_argument(
        "--files", help="comma-separated test files to run instead of the mapped ones (quick look)"
    )
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args()

    if args.list:
        for mutation in MUTATIONS:
            print(f"{mutation.name:28} {mutation.file:24} {mutation.what}")
        return 0
    selected = MUTATIONS
    if args.only:
        wanted = set(args.only.split(","))
        selected = [mutation for mutation in MUTATIONS if mutation.name in wanted]
        unknown = wanted - {mutation.name for mutation in selected}
        if unknown:
            parser.error(f"unknown mutations: {', '.join(sorted(unknown))}")
    # --check looks at every mutant; a run needs only the fragments of the mutants it runs
    problems = check_fragments(REPO, MUTATIONS if args.check else selected)
    if problems or args.check:
        print("\n".join(problems) or f"all {len(MUTATIONS)} fragments found exactly once")
        return 1 if problems else 0
    shared = args.shared.resolve() if args.shared.is_dir() else None
    if args.mode != "without" and shared is None:
        parser.error(f"{args.shared}: no shared folder for --mode {args.mode}")

    results = []
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as temp:
        copy = Path(temp) / "repo"
        copy_repo(REPO, copy)
        groups = sorted({mutation.tests for mutation in selected})
        # The unmutated code must pass what the mutants are judged by, in every mode used.
        modes = ["without", "with"] if args.mode == "both" else [args.mode]
        baseline_files = sorted({f for g in groups for f in test_files(copy, g, args.files)})
        for mode in [] if args.no_baseline else modes:
            set_shared(copy, shared if mode == "with" else None)
            outcome, seconds, last = run_pytest(copy, baseline_files, args.timeout * 3)
            print(f"baseline ({mode} shared): {outcome} in {seconds:.0f} s: {last}", flush=True)
            if outcome != "passed":
                print("the unmutated code fails its tests: fix that first", file=sys.stderr)
                return 2
        for number, mutation in enumerate(selected, 1):
            original = apply(copy, mutation)
            files = test_files(copy, mutation.tests, args.files)
            record = {"name": mutation.name, "file": mutation.file, "what": mutation.what}
            try:
                for mode in modes:
                    set_shared(copy, shared if mode == "with" else None)
                    outcome, seconds, last = run_pytest(copy, files, args.timeout)
                    record[mode] = outcome
                    record[f"{mode}_seconds"] = round(seconds, 1)
                    record[f"{mode}_last"] = last
                    if mode == "without" and "with" in modes:
                        if outcome != "passed" or not uses_shared(copy, files):
                            # caught: the same failing tests run with shared too; survived
                            # with files that never look at ../shared: the same run again
                            record["with"] = outcome
                            break
            finally:
                (copy / mutation.file).write_text(original)
            results.append(record)
            shown = "  ".join(f"{mode}: {record[mode]}" for mode in modes)
            print(f"[{number}/{len(selected)}] {mutation.name:28} {shown}", flush=True)

    print()
    print(f"{'mutation':28} {'file':24} " + " ".join(f"{mode + ' shared':15}" for mode in modes))
    for record in results:
        cells = " ".join(
            f"{('caught' if record[mode] != 'passed' else 'SURVIVED'):15}" for mode in modes
        )
        print(f"{record['name']:28} {record['file']:24} {cells}  {record['what']}")
    print()
    for mode in modes:
        caught = sum(record[mode] != "passed" for record in results)
        share = caught / len(results) if results else 0
        print(f"{mode} shared: {caught}/{len(results)} caught ({share:.0%})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
