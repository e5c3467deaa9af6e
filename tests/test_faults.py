"""Faults at scale, with torchrun's own machinery (gloo on CPU): a lost rank, a preemption, a refusal on
one rank, a rendezvous across two agents.

Each test launches `torchrun` as a user would; they cost process start-up and training, so they are
marked slow (run with `pytest -m "slow and distributed" tests/test_faults.py`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file

from vitcli import recipe

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORKER = Path(__file__).with_name("fault_worker.py")
STEPS, EVERY = 40, 8
# Constant-lr SGD without augmentation or dropout (as tests/test_distributed.py): only the fault differs.
SETS = {"train": {"batch_size": 16, "steps": STEPS, "seed": 5, "checkpoint_every": EVERY, "log_every": 1},
        "optim": {"name": "sgd", "lr": 0.05}, "schedule": {"warmup_steps": 0, "decay": "constant"}}


def write_recipe(folder: Path, data: Path, **extra) -> str:
    body = tiny_recipe(data, **SETS)
    for key, value in extra.items():
        body.setdefault(key, {}).update(value)
    path = folder / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe.to_yaml(recipe.from_data(body, "test")))
    return str(path)


def launcher(*agent: str, worker: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--monitor-interval=0.2", *agent,
            *(worker or ["-m", "vitcli"])]


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"torchrun still running after {timeout} s:\n{err[-3000:]}")
    return proc.returncode, err


def workers(agent: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of the agent's worker processes (read from each child's environment)."""
    found = {}
    for pid in subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(pid)
    return found


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"torchrun ended before {path} appeared:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


def same_weights(a: Path, b: Path) -> None:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    for key in x:
        assert torch.equal(x[key], y[key]), key


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r and "top1" not in r}


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("faults")
    (root / "data").symlink_to(tiny_data)
    return root


@pytest.fixture(scope="module")
def uninterrupted(dist_dir):
    """The reference: two ranks under one agent, never disturbed."""
    out = dist_dir / "reference"
    code, err = finish(start(launcher("--standalone", "--nproc-per-node=2") +
                             ["pretrain", write_recipe(dist_dir / "r0", dist_dir / "data"), "--out", str(out)]))
    assert code == 0, err[-3000:]
    return out


def test_a_rank_killed_after_a_checkpoint_is_restarted_and_resumes_bit_exact(dist_dir, uninterrupted):
    out = dist_dir / "killed"
    cmd = launcher("--standalone", "--nproc-per-node=2", "--max-restarts=2") + [
        "pretrain", write_recipe(dist_dir / "r1", dist_dir / "data"), "--out", str(out)]
    agent = start(cmd)
    at = random.Random().choice(range(EVERY, STEPS, EVERY))  # after the first checkpoint, before the end
    wait_for(out / "checkpoints" / f"step-{at:08d}.pt", agent)
    assert not (out / "model.safetensors").exists()
    os.kill(workers(agent)[1], signal.SIGKILL)
    code, err = finish(agent)
    assert code == 0, err[-3000:]
    assert "restart 1 of this job: resuming" in err
    same_weights(out, uninterrupted)
    assert sorted(losses(out)) == list(range(1, STEPS + 1))  # every step logged once


def test_sigterm_to_the_agent_saves_on_every_rank_and_the_requeued_job_finishes_bit_exact(dist_dir,
                                                                                         uninterrupted):
    out = dist_dir / "preempted"
    cmd = launcher("--standalone", "--nproc-per-node=2") + [
        "pretrain", write_recipe(dist_dir / "r2", dist_dir / "data"), "--out", str(out)]
    agent = start(cmd)
    wait_for(out / "checkpoints" / f"step-{EVERY:08d}.pt", agent)
    os.kill(agent.pid, signal.SIGTERM)  # what SLURM sends before it kills a preempted job
    code, err = finish(agent, timeout=60)
    assert code != 0
    assert err.count("stopped by SIGTERM after step") == 2, err[-3000:]  # every rank, at the same step
    stopped = {line.split("after step ")[1].split(";")[0] for line in err.splitlines() if "stopped by" in line}
    assert len(stopped) == 1
    step = int(stopped.pop())
    assert (out / "checkpoints" / f"step-{step:08d}.pt").exists()
    # The requeued job runs the same command; SLURM says it is a restart.
    code, err = finish(start(cmd, env={"SLURM_RESTART_COUNT": "1"}))
    assert code == 0, err[-3000:]
    assert f"at step {step}" in err
    same_weights(out, uninterrupted)


def refusal(dist_dir: Path, worker: list[str], *args: str) -> str:
    started = time.monotonic()
    code, err = finish(start(launcher("--standalone", "--nproc-per-node=2", worker=worker) + list(args)),
                       timeout=120)
    assert code != 0
    assert time.monotonic() - started < 60, "the other rank waited for the failed one"
    assert not [line for line in err.splitlines() if line.strip().startswith('File "') and "vitcli" in line], \
        err[-3000:]
    return err


def test_a_refusal_only_rank_0_makes_ends_every_rank(dist_dir):
    taken = dist_dir / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("someone else's files\n")
    err = refusal(dist_dir, ["-m", "vitcli"], "pretrain",
                  write_recipe(dist_dir / "r3", dist_dir / "data"), "--set", f"run.out={taken}")
    assert "the directory already holds files that are not a vit run" in err
    assert (taken / "notes.txt").read_text() == "someone else's files\n"


def test_data_unreadable_on_rank_1_only_ends_every_rank(dist_dir):
    err = refusal(dist_dir, [str(WORKER), "io", "1"], "pretrain",
                  write_recipe(dist_dir / "r4", dist_dir / "data"), "--out", str(dist_dir / "io"))
    assert "Input/output error" in err


def test_a_nan_loss_on_one_rank_ends_every_rank(dist_dir):
    err = refusal(dist_dir, [str(WORKER), "nan", "1"], "pretrain",
                  write_recipe(dist_dir / "r5", dist_dir / "data"), "--out", str(dist_dir / "nan"))
    assert "non-finite loss or gradient at step 3" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_agents_rendezvous_like_two_nodes_and_train_as_one_agent_does(dist_dir, uninterrupted):
    out = dist_dir / "two-nodes"
    port = free_port()
    agent = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
             "--rdzv-id=vit-test"]
    cmd = launcher(*agent) + ["pretrain", write_recipe(dist_dir / "r6", dist_dir / "data"), "--out", str(out)]
    nodes = [start(cmd), start(cmd)]
    results = [finish(node) for node in nodes]
    assert all(code == 0 for code, _ in results), results[0][1][-2000:] + results[1][1][-2000:]
    one, two = losses(uninterrupted), losses(out)
    assert one.keys() == two.keys()
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-6), step


def test_a_hung_rank_times_out_with_one_line_naming_the_rank_and_step(dist_dir):
    out = dist_dir / "hung"
    cmd = launcher("--standalone", "--nproc-per-node=2") + [
        "pretrain", write_recipe(dist_dir / "r7", dist_dir / "data", train={"timeout": 5}), "--out", str(out)]
    agent = start(cmd)
    wait_for(out / "checkpoints" / f"step-{EVERY:08d}.pt", agent)
    hung = workers(agent)[1]
    os.kill(hung, signal.SIGSTOP)  # alive but silent, as a process on a wedged node
    try:
        time.sleep(12)  # rank 0 gives up after train.timeout (5 s)
    finally:
        os.kill(hung, signal.SIGCONT)
    code, err = finish(agent, timeout=60)
    assert code != 0
    assert "rank 0 at step" in err and "waited 5 s for the other processes (train.timeout)" in err, err[-3000:]
    assert not [line for line in err.splitlines() if line.strip().startswith('File "') and "vitcli" in line], \
        err[-3000:]
