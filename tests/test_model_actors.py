"""`--executor ray` with model actors: two real Ray nodes, rows as a local run, faults."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from synccurate.cli import app
from synccurate.training import synth

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'synccurate[ray]')")

from synccurate.io.inputs import discover  # noqa: E402
from synccurate.models import load_model  # noqa: E402
from synccurate.pipeline import driver  # noqa: E402
from synccurate.pipeline.cluster import (  # noqa: E402
    ACTOR_NAME_PREFIX,
    ClusterScorer,
    ModelSource,
    merge_stats,
)
from synccurate.store import parts  # noqa: E402

# the `ray` command of this environment (the venv's bin folder need not be on PATH)
RAY_CLI = str(Path(sys.executable).with_name("ray"))
NODE_START_S = 60.0  # a Ray node (its GCS, raylet) answers within this on a busy machine
CLIPS = 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + NODE_START_S
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    ended = process.poll()
    why = f"`ray start` exited with {ended}" if ended is not None else f"{NODE_START_S:.0f} s"
    raise RuntimeError(f"the Ray head did not listen on {port} ({why})")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    synth.synth_dataset(folder, n=CLIPS, seconds=2.0, seed=3, offset_range=5, workers=1)
    return folder


def _wait_for_nodes(address: str, env: dict, count: int) -> None:
    """Until `count` nodes are alive: a run started before the second joins sees one CPU."""
    probe = (
        "import sys, time, ray\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        f"deadline = time.monotonic() + {NODE_START_S}\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count}:\n"
        "    if time.monotonic() > deadline: sys.exit('the second Ray node did not join')\n"
        "    time.sleep(0.5)\n"
    )
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=2 * NODE_START_S)


@contextmanager
def _ray_nodes(second_node_args: tuple[str, ...] = ()):
    """A head and a second node of one CPU each, as in docs/cluster.md, with a token."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: unix socket paths ≤ 107 bytes
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_TMPDIR": temp}
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]
    head = subprocess.Popen(
        [RAY_CLI, "start", "--head", "--port", str(port), "--temp-dir", temp]
        + ["--include-dashboard", "false", *common],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nodes = [head]
    try:
        _wait_for_port(port, head)
        address = f"127.0.0.1:{port}"
        nodes.append(
            subprocess.Popen(
                [RAY_CLI, "start", "--address", address, *common, *second_node_args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_for_nodes(address, env, count=2)
        yield address, env
    finally:
        for node in reversed(nodes):  # `ray start --block` stops its node's processes on SIGTERM
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=60)


@pytest.fixture(scope="module")
def two_nodes():
    with _ray_nodes() as cluster:
        yield cluster


def _table(folder) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values("path").reset_index(drop=True)


def test_two_nodes_give_the_rows_of_a_local_run_from_two_writers(two_nodes, clips, tmp_path):
    address, env = two_nodes
    common = ["score", str(clips), "--face-detector", "none", "--no-progress"]
    local = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "local"), "--workers", "0"])
    assert local.exit_code == 0, local.output
    on_ray = [*common, "-o", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", address]
    subprocess.run(
        [sys.executable, "-m", "synccurate", *on_ray, "--model-actors", "2"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    expected, got = _table(tmp_path / "local"), _table(tmp_path / "ray")
    assert list(got["path"]) == [f"clip_{i:05d}.mp4" for i in range(CLIPS)]
    for column in ("status", "offset_frames", "n_frames", "model"):
        assert got[column].equals(expected[column]), column
    np.testing.assert_allclose(got["prob_at_offset"], expected["prob_at_offset"], atol=1e-5)
    for a, b in zip(got["profile"], expected["profile"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert got["run_id"].nunique() == 2  # one writer per actor, one actor per node
    names = [p.name for p in (tmp_path / "ray").glob("part-*.parquet")]
    assert len({name.rsplit("-", 1)[0] for name in names}) == 2


def _raylet_pids(node_manager_port: int) -> list[int]:
    """The raylet process of the node whose node manager listens on that port."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            args
            and args[0].endswith(b"raylet")
            and f"={node_manager_port}".encode()
            in b" ".join(a for a in args if a.startswith(b"--node_manager_port"))
        ):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_a_node_whose_raylet_is_killed_mid_run_loses_no_clip(tmp_path):
    """The second node's raylet is SIGKILLed while its actor scores: the run finishes on the
    head (or the rerun does), and every clip has exactly one row."""
    manager_port = _free_port()
    folder = tmp_path / "clips"
    synth.synth_dataset(folder, n=12, seconds=2.0, seed=9, workers=1)
    with _ray_nodes(("--node-manager-port", str(manager_port))) as (address, env):
        command = [sys.executable, "-m", "synccurate", "score", str(folder), "-o"]
        command += [str(tmp_path / "scores"), "--face-detector", "none", "--no-progress"]
        command += ["--executor", "ray", "--ray-address", address, "--model-actors", "2"]
        command += ["--part-seconds", "0"]
        run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while not list((tmp_path / "scores").glob("part-*.parquet")):  # scoring has begun
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()
            time.sleep(0.2)
        raylets = _raylet_pids(manager_port)
        assert len(raylets) == 1
        os.kill(raylets[0], signal.SIGKILL)
        run.communicate(timeout=600)
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    table = pd.read_parquet(tmp_path / "scores")
    assert sorted(table["path"]) == [f"clip_{i:05d}.mp4" for i in range(12)]  # each once
    assert (table["status"] == "ok").all()


@pytest.fixture
def local_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("part_seconds", [60.0, 0.0])
def test_killed_actors_lose_no_clip_and_leave_no_second_row(local_cluster, tmp_path, part_seconds):
    """Both actors are killed after the first clip is reported: with parts published late
    (60 s) their rows are lost and scored again; published at once (0 s), kept, not redone."""
    folder = tmp_path / "clips"
    synth.synth_dataset(folder, n=8, seconds=1.0, seed=5, workers=1)
    model = load_model()
    writer, done = parts.open_output(
        tmp_path / "scores", {"model": model.model_id, "max_offset": 15},
        seconds_per_part=part_seconds,
    )  # fmt: skip
    scorer = ClusterScorer(ModelSource(None, None, model.model_id, Path.cwd()), device="cpu",
                           model_actors=2)  # fmt: skip
    announced, killed = [], []

    def kill_every_actor_once(row: dict, stats: driver.RunStats) -> None:
        announced.append(row["path"])
        if not killed:
            killed.extend(
                n for n in ray.util.list_named_actors() if n.startswith(ACTOR_NAME_PREFIX)
            )
            for name in killed:
                ray.kill(ray.get_actor(name), no_restart=True)

    with writer:
        stats = scorer(
            discover([folder]), writer, model, done=done, on_clip=kill_every_actor_once,
            detector_name="none",
        )  # fmt: skip
    table = pd.read_parquet(tmp_path / "scores")
    assert len(killed) == 2
    assert sorted(table["path"]) == sorted(announced) == [f"clip_{i:05d}.mp4" for i in range(8)]
    assert (table["status"] == "ok").all()
    assert stats.clips == 8 and stats.statuses == {"ok": 8}
    killed_ids = {name.removeprefix(ACTOR_NAME_PREFIX) for name in killed}
    if part_seconds:  # the killed actors' rows were unpublished: none of them survived
        assert not killed_ids & set(table["run_id"])
    else:  # published before the kill: kept, and not scored again by the replacements
        assert killed_ids & set(table["run_id"])


def test_more_actors_than_the_cluster_has_room_for_is_said_at_the_end(local_cluster, tmp_path):
    """Three actors asked of two CPUs: two run, every clip is scored, and the run says so."""
    folder = tmp_path / "clips"
    synth.synth_dataset(folder, n=4, seconds=1.0, seed=6, workers=1)
    model = load_model()
    writer, done = parts.open_output(
        tmp_path / "scores", {"model": model.model_id, "max_offset": 15}
    )
    scorer = ClusterScorer(ModelSource(None, None, model.model_id, Path.cwd()), device="cpu",
                           model_actors=3)  # fmt: skip
    with writer:
        stats = scorer(discover([folder]), writer, model, done=done, detector_name="none")
    assert stats.statuses == {"ok": 4}
    assert stats.notes == [
        "--model-actors 3: 2 ran (each asks for {'num_gpus': 0, 'num_cpus': 1}; "
        "the cluster has 2 CPU, 0 GPU)"
    ]


def test_clips_an_actor_published_as_it_died_are_counted_and_announced(tmp_path, monkeypatch):
    """An actor wrote and published two clips of its task, then died before it reported:
    the driver finds them in its parts, counts and announces them, and sends only the
    third clip again (alone, as a suspect of the crash)."""
    from synccurate.pipeline.cluster import OutputPlan, _Dispatch, _Task

    folder = tmp_path / "clips"
    synth.synth_dataset(folder, n=3, seconds=1.0, seed=8, workers=1)
    refs = discover([folder])
    model = load_model()
    pins = {"model": model.model_id, "max_offset": 15}
    writer, _ = parts.open_output(tmp_path / "scores", pins, seconds_per_part=0.0)
    with OutputPlan.of(writer, None).open(f"{writer.run_id}-a001") as actor_writer:
        driver.score_clips(
            refs[:2], actor_writer, model, device=torch.device("cpu"), detector_name="none"
        )
    announced = []
    source = ModelSource(None, None, model.model_id, Path.cwd())
    dispatch = _Dispatch(
        ClusterScorer(source, device="cpu"), writer, {}, model, {}, driver.RunStats(),
        lambda row, _stats: announced.append(row["path"]),
    )  # fmt: skip
    dispatch.actors["dead"] = None
    dispatch.in_flight["dead"] = _Task(refs)
    monkeypatch.setattr(dispatch, "_replace", lambda: None)  # no cluster here
    dispatch._died("dead", "killed")
    assert announced == [refs[0].path, refs[1].path]
    assert dispatch.stats.clips == 2 and dispatch.stats.statuses == {"ok": 2}
    assert dispatch.stats.video_seconds == pytest.approx(2.0)
    assert [(task.refs, task.alone) for task in dispatch.queue] == [([refs[2]], True)]


def test_merge_stats_adds_every_counter_and_keeps_the_clock():
    total, part = driver.RunStats(), driver.RunStats()
    total.statuses["ok"], total.seconds["model"] = 2, 1.5
    part.clips, part.video_seconds, part.synthetic_on_real = 3, 6.0, 1
    part.statuses.update({"ok": 1, "no_face": 2})
    part.seconds.update({"model": 0.5, "faces": 2.0})
    started = total.started
    merge_stats(total, part)
    assert (total.clips, total.video_seconds, total.synthetic_on_real) == (3, 6.0, 1)
    assert total.statuses == {"ok": 3, "no_face": 2}
    assert total.seconds == {"model": 2.0, "faces": 2.0}
    assert total.started == started
