"""Streamed data: this rank's shards, shuffled in a bounded buffer, resumed from a saved position in O(1).

A rank reads the shards `datasets.distributed.split_dataset_by_node` gives it; each DataLoader worker reads
its share of those (datasets' own split by worker) one shard after another. `datasets` can save and restore
where a stream is (`IterableDataset.state_dict()`: shard index and offset) but not what its shuffle buffer
holds, so a stream resumed through `datasets.shuffle` sees other examples than the run it continues. Here
the buffer never holds examples of two shards: it is seeded per (seed, epoch, rank, worker, shard) and
drained when its shard ends. A worker's position is then datasets' own state at the start of the shard it
is reading plus how many examples of that shard it has handed out; resuming loads that state (the shards
before it are never opened), reads that one shard again to refill the buffer exactly as before, and skips
what was handed out. The resumed sequence equals the uninterrupted run's, and at most one shard per worker
is read twice.

The DataLoader takes batches from its workers in turn; a resumed DataLoader would start with worker 0.
`in_order` takes them in turn itself, from the worker whose batch comes next, so the order is the same.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterator

import datasets
import numpy as np
import torch
from torch.utils.data import get_worker_info

from vitcli.data.sampler import mix_seed
from vitcli.errors import DataError

_SHARD_READERS = ("ArrowExamplesIterable", "ExamplesIterable")  # datasets' readers of one shard after another
_STRIDED = "StepExamplesIterable"  # split_dataset_by_node with shards % world != 0: every rank reads every shard
_UNSET = object()  # no shard yet
_NAMES = ("__key__", "__url__")  # WebDataset's example name and shard file: errors quote them


def shard_cursor(state: dict | None) -> dict | None:
    """The part of a datasets `IterableDataset.state_dict()` that says which shard is being read
    (`{"shard_idx", "shard_example_idx"}`), or None where the stream is not read shard by shard (several
    sources interleaved, or examples strided across ranks): such a stream is resumed from its start."""
    node = state.get("examples_iterable") if isinstance(state, dict) else None
    while isinstance(node, dict):
        kind = node.get("type")
        if kind in _SHARD_READERS:
            return node
        if kind == _STRIDED:
            return None
        node = node.get("examples_iterable")
    return None


class StreamReader(torch.utils.data.IterableDataset):
    """Batches from this rank's stream; each worker reads its own shards.

    Every batch comes with a mark, (worker, its position after the batch, None), and each worker ends with
    (worker, None, None), or (worker, None, what is wrong) at an example without an image or label: the
    training process raises it (`StreamOrder`). `resume` (`StreamOrder.state()`) continues each worker.
    """

    def __init__(self, ds, decoder, batch_size: int, seed: int | None, rank: int, buffer: int,
                 resume: dict | None = None):
        # the two columns as Decoder.columns takes them, and WebDataset's names of the example for errors
        names = [c for c in _NAMES if c in (ds.features or {})]
        ds = ds.select_columns([decoder.image_column, decoder.label_column, *names])
        self.ds, self.decoder = ds.cast_column(decoder.image_column, datasets.Image(decode=False)), decoder
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.drop_last = seed is not None  # training
        self.buffer = buffer if seed is not None else 0  # evaluation reads in order
        self.resume = resume  # {"at": {worker: position}, ...} or None
        # datasets' state before anything is read: a shard's start is this with the shard's index
        self.initial = self.ds.state_dict()

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info else 0
        at = dict(self.resume["at"].get(str(worker), {})) if self.resume else {}
        fault = None
        if not at.get("done"):
            fault = yield from self._batches(worker, at)
        yield None, None, None, None, (worker, None, fault)  # this worker has no more

    def _batches(self, worker: int, at: dict):
        self.ds.load_state_dict(at.get("state"))  # None: from the start of this epoch's stream
        number, skip = at.get("batches", 0), at.get("taken", 0)
        batch, position = [], None
        for example, position in self._shuffled(worker):
            if skip:  # handed out before the resume: read again only to refill the buffer as it was
                skip -= 1
                continue
            if (fault := self._missing(example)) is not None:
                return fault
            batch.append(example)
            if len(batch) == self.batch_size:
                yield self._decode(batch, worker, number, {**position, "batches": number + 1})
                batch, number = [], number + 1
        if batch and not self.drop_last:
            yield self._decode(batch, worker, number, {**position, "batches": number + 1})
        return None

    def _missing(self, example: dict) -> str | None:
        """What an example lacks (a WebDataset sample without its .cls file, a null in parquet), or None."""
        for kind, column in (("image", self.decoder.image_column), ("label", self.decoder.label_column)):
            if example[column] is None:
                named = (f"example {example['__key__']!r} of {example['__url__']}" if "__url__" in example
                         else "an example")
                return f"{named} has no {kind} (no {column!r}); every example needs one: add it or remove the example"
        return None

    def _shuffled(self, worker: int) -> Iterator[tuple[dict, dict]]:
        """(example, the position after it), shuffled within each shard. A position is datasets' state at
        the start of a shard (None: of the stream) and how many examples of it were handed out."""
        buffer, shard, start, taken, rng = [], _UNSET, None, 0, None
        for example in self.ds:
            cursor = shard_cursor(self.ds.state_dict())
            index = None if cursor is None else cursor["shard_idx"]
            if index != shard:  # the shard ended: what is left of it goes out, then the next one begins
                after = self._shard_start(index)
                rest = _drained(buffer, rng)
                for i, out in enumerate(rest, taken + 1):
                    # the last one ends the shard: the position after it is the next shard's start
                    yield out, {"state": after, "taken": 0} if i == taken + len(rest) else {"state": start, "taken": i}
                shard, start, taken, buffer = index, after, 0, []
                rng = None if not self.buffer else np.random.default_rng(
                    [self.seed, self.ds.epoch, self.rank, worker, 0 if index is None else index + 1])
            buffer.append(example)
            if len(buffer) > self.buffer:  # full: one of them, at random, goes out
                pick = int(rng.integers(len(buffer))) if rng is not None else 0
                buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                taken += 1
                yield buffer.pop(), {"state": start, "taken": taken}
        for i, out in enumerate(_drained(buffer, rng), taken + 1):
            yield out, {"state": start, "taken": i}

    def _shard_start(self, index: int | None) -> dict | None:
        """datasets' state that resumes at the first example of shard `index` (None: the stream's start)."""
        if index is None:
            return None
        state = copy.deepcopy(self.initial)
        state["epoch"] = self.ds.epoch
        shard_cursor(state).update(shard_idx=index, shard_example_idx=0)
        return state

    def _decode(self, batch, worker: int, number: int, position: dict):
        seed = None if self.seed is None else mix_seed(self.seed, self.ds.epoch, self.rank, worker, number)
        values = [example[self.decoder.image_column] for example in batch]
        labels = [example[self.decoder.label_column] for example in batch]
        positions = range(number * self.batch_size, (number + 1) * self.batch_size)  # in this worker's stream
        return (*self.decoder(values, labels, positions, seed), (worker, position, None))


def _drained(buffer: list, rng) -> list:
    """What is left in a shard's buffer, in a random order."""
    if rng is None or len(buffer) < 2:
        return buffer
    return [buffer[i] for i in rng.permutation(len(buffer))]


class StreamOrder:
    """Takes the workers' batches in turn, from a given worker on, and knows where every worker is.

    `state()` after a batch was used resumes the stream right after it (`StreamReader(resume=...)`).
    """

    def __init__(self, processes: int, epoch: int, resume: dict | None = None, where: str = "stream"):
        # processes: the DataLoader's worker processes (0: batches made in this one, as one worker)
        self.processes, self.workers, self.epoch = processes, max(processes, 1), epoch
        self.resume, self.where = resume, where  # where every iteration starts; how errors name the split
        self._restart()

    def _restart(self) -> None:
        self.turn = self.resume["next"] if self.resume else 0
        self.at: dict[str, dict] = copy.deepcopy(self.resume["at"]) if self.resume else {}

    def __call__(self, items):
        """The batches of `items` (the DataLoader's, in its order) in the workers' turn, without the marks.
        Each iteration starts where the loader was made to start, as the reader's workers do."""
        self._restart()
        queues = {w: deque() for w in range(self.workers)}
        ended = {w for w in range(self.workers) if self.at.get(str(w), {}).get("done")}
        items = iter(items)
        while len(ended) < self.workers:
            if self.turn in ended:
                self.turn = (self.turn + 1) % self.workers
                continue
            while not queues[self.turn]:
                *batch, (worker, position, fault) = next(items)
                if fault is not None:
                    raise DataError(f"{self.where}: {fault}")
                queues[worker].append((batch, position))
            batch, position = queues[self.turn].popleft()
            if position is None:
                ended.add(self.turn)
                self.at[str(self.turn)] = {"done": True}
            else:
                self.at[str(self.turn)] = position
                self.turn = (self.turn + 1) % self.workers
                yield batch

    def state(self) -> dict:
        """Where the stream is: per worker, datasets' state at the start of its shard and how far into it."""
        return {"epoch": self.epoch, "workers": self.processes, "next": self.turn, "at": copy.deepcopy(self.at)}
