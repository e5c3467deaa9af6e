"""A streamed data set's position in checkpoints: every rank's, gathered to the rank that writes them.

Each rank reads its own shards (and each of its DataLoader workers its own share of those), so each
rank's position is its own; the checkpoint holds the list, in rank order, and a resumed rank takes its
entry. Map-style data needs none of this: its position is the epoch and step (trainer.Position).
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from vitcli.errors import CheckpointError


def gather(loader, rt) -> list[dict] | None:
    """Every rank's stream position after the batches used so far, in rank order (None: not streamed).

    A collective under torchrun: every rank calls it, rank 0 keeps the list.
    """
    state = loader.stream_state() if loader is not None else None
    if not rt.distributed:
        return None if state is None else [state]
    states: list = [None] * rt.world
    dist.all_gather_object(states, state)
    return None if state is None else states


def restored(states, rt, epoch: int, where: Path) -> dict | None:
    """This rank's saved stream position, or None when there is none to continue (map-style data, a
    checkpoint written before positions were saved, or one saved as its epoch ended)."""
    if states is None:
        return None
    if not isinstance(states, list) or not all(isinstance(s, dict) and {"epoch", "workers", "next", "at"} <= set(s)
                                               for s in states):
        raise CheckpointError(f"--resume: {where}: stream: not a saved stream position")
    if len(states) != rt.world:
        raise CheckpointError(f"--resume: {where} holds the stream positions of {len(states)} processes; each reads "
                              f"its own shards, so resume it with {len(states)} (torchrun --nproc-per-node "
                              f"{len(states)}), not {rt.world}")
    state = states[rt.rank]
    return state if state["epoch"] == epoch else None
