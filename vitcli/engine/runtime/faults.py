"""Many processes stop together: a failure on one rank ends every rank within seconds.

Under torchrun a rank that refuses (a bad recipe only rank 0 checks, data only rank 1 cannot read, a
full disk under rank 0's checkpoint) leaves the others blocked in their next collective until its
timeout. Two things prevent that:

- `PeerWatch`: the failing rank writes one key into the process group's own key-value store (the
  c10d store torchrun's rendezvous already runs; no port or service of vit's). Every other rank polls
  it from a daemon thread and leaves at once with the failing rank's exit code, even from inside a
  blocked collective, where no Python code of the main thread would run. The failing rank prints its
  own one line; rank 0, if it was not the one that failed, prints it too (it is the log users read).
- A timeout on every collective (`train.timeout`, passed to `init_process_group`), for a peer that
  hangs without failing (a stopped process, a lost node); `collective_error` turns the backend's
  message into one line naming the rank and step.

A process that leaves this way writes nothing: checkpoints are written atomically, so the last one
on disk stays whole, and torchrun restarts or ends the group as its own options say.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import torch.distributed as dist

from vitcli.errors import RunError, VitError, first_line

KEY = "vit/failed"
POLL_S = 0.5


class PeerLost(RunError):
    """The other processes of the run were lost (a dead peer, a hung one): not the user's input, exit 1."""

    exit_code = 1


class PeerWatch:
    """Publishes this rank's failure and ends this process when another rank publishes one."""

    def __init__(self, rank: int):
        self.rank = rank
        self.store = _default_store()
        self._stop = threading.Event()
        self._thread = None
        if self.store is not None:
            self._thread = threading.Thread(target=self._watch, name="vit-peer-watch", daemon=True)
            self._thread.start()

    def publish(self, exc: BaseException) -> None:
        """Tell the other ranks this one failed (the first failure published is the one they report)."""
        if self.store is None:
            return
        code = exc.exit_code if isinstance(exc, VitError) else 1
        record = json.dumps({"rank": self.rank, "code": code, "message": first_line(exc)})
        try:
            self.store.compare_set(KEY, "", record)  # sets only when no rank has published yet
        except Exception:  # noqa: BLE001 - the store may be gone with its host; the timeout still ends us
            pass

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            if self.leave_if_peer_failed() is None:
                return  # the store's host left: the group is ending anyway

    def stop(self) -> None:
        """End the watch before the process group goes: a thread left inside a store call while the process
        exits aborts it ("terminate called without an active exception", exit -6)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_S + 5)

    def leave_if_peer_failed(self) -> bool | None:
        """End this process, as the rank that published a failure did, if another one did; False when
        none did; None when the store cannot be asked (its host left)."""
        try:
            if not self.store.check([KEY]):
                return False
            record = json.loads(self.store.get(KEY))
        except Exception:  # noqa: BLE001 - a broken store is "cannot tell", never a crash of its own
            return None
        if record.get("rank") == self.rank:
            return False  # our own failure: the main thread reports it
        if self.rank == 0:
            print(f"error: rank {record['rank']} failed: {record['message']}", file=sys.stderr, flush=True)
        os._exit(int(record.get("code", 1)))


def _default_store():
    """The default process group's key-value store, or None where torch keeps it elsewhere."""
    get = getattr(dist.distributed_c10d, "_get_default_store", None)
    try:
        return get() if get is not None and dist.is_initialized() else None
    except (RuntimeError, ValueError):
        return None


def collective_error(exc: BaseException, rank: int, step: int | None, timeout: float,
                     peers: PeerWatch | None) -> BaseException:
    """What a failed collective means, as one line: a peer that published its failure ends this process
    as the watcher would (its own line is the one that counts); a wait past train.timeout or a peer that
    vanished (killed, its node lost) becomes a RunError naming this rank and the step."""
    text = first_line(exc)
    if peers is not None and peers.store is not None:
        for _ in range(10):  # a failing rank publishes before its connections close: wait up to a second
            if peers.leave_if_peer_failed() is not False:
                break
            threading.Event().wait(0.1)
    where = f"rank {rank}" + (f" at step {step}" if step is not None else " before training")
    if "timed out" in text.lower() or "timeout" in text.lower():
        return PeerLost(f"{where}: waited {timeout:g} s for the other processes (train.timeout) and gave up: "
                        "another process stopped, hangs or lost its network; the last checkpoint on disk is whole")
    return PeerLost(f"{where}: lost the other processes ({text[:160]}); one of them died or its node was lost; "
                    "the last checkpoint on disk is whole (torchrun --max-restarts resumes from it)")


def is_collective_error(exc: BaseException) -> bool:
    """Whether an exception comes from the process group's backend (gloo, NCCL) rather than from vit."""
    backend = getattr(dist, "DistError", ())
    text = str(exc)
    return isinstance(exc, backend) or (isinstance(exc, RuntimeError) and any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out")))
