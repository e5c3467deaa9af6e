"""A torchrun worker that injects one fault on one rank, then runs `vit` as usual (tests/test_faults.py).

    torchrun ... tests/fault_worker.py FAULT RANK vit-arguments...

FAULT is what breaks on rank RANK only, as it would on one machine of a cluster:
- `io`: the data files cannot be read there (every `datasets.load_dataset` call fails with EIO);
- `nan`: the loss becomes NaN there from the third training step on.
The product code is untouched: the fault is injected from outside, the way a failing disk or a bad
batch would strike.
"""

from __future__ import annotations

import errno
import os
import sys


def inject(fault: str) -> None:
    if fault == "io":
        import datasets

        def unreadable(*args, **kwargs):
            raise OSError(errno.EIO, "Input/output error", str(args[0]) if args else "data")

        datasets.load_dataset = unreadable
    elif fault == "nan":
        from vitcli.engine.train import objectives

        original = objectives.Supervised.loss
        calls = {"n": 0}

        def poisoned(self, model, images, labels):
            loss, extras = original(self, model, images, labels)
            calls["n"] += 1
            return (loss * float("nan") if calls["n"] >= 3 else loss), extras

        objectives.Supervised.loss = poisoned
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main() -> None:
    fault, rank, *args = sys.argv[1:]
    if os.environ.get("RANK") == rank:
        inject(fault)
    from vitcli.cli import main as vit

    sys.argv = ["vit", *args]
    vit()


if __name__ == "__main__":
    main()
