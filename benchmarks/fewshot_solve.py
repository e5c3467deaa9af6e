"""Time the few-shot ridge solve at ImageNet scale: 25 shots x 1000 classes of 768-d features.

    .venv/bin/python benchmarks/fewshot_solve.py            # 25,000 x 768 train, 10,000 test, 3 seeds

Random features stand in for a ViT-B's pre-logits, so accuracy is chance (~0.1%); only the time of
`ridge_fewshot` (standardise, one eigendecomposition, weights and test accuracy per lambda) is
measured, for one lambda and for three lambdas sharing the decomposition. Prints a markdown table
row for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from vitcli.engine.evaluate.fewshot import ridge_fewshot, sample_shots


def _time_solves(train_x, train_y, test_x, test_y, classes, shots, seeds, l2_regs) -> list[float]:
    times = []
    for seed in range(seeds):
        idx = sample_shots(train_y, shots, seed, num_classes=classes)
        start = time.perf_counter()
        ridge_fewshot(train_x[idx], train_y[idx], test_x, test_y, classes, l2_regs)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    """Parse sizes, build random features, time the solves and print the result row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--shots", type=int, default=25)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--test", type=int, default=10_000)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()

    gen = torch.Generator().manual_seed(0)
    # The pool holds exactly `shots` images per class, as the sampled subset would.
    train_y = torch.arange(args.classes).repeat(args.shots)
    train_x = torch.randn(len(train_y), args.dim, generator=gen)
    test_x = torch.randn(args.test, args.dim, generator=gen).double()  # fewshot_eval converts once
    test_y = torch.randint(0, args.classes, (args.test,), generator=gen)

    solve = dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                 classes=args.classes, shots=args.shots, seeds=args.seeds)
    _time_solves(**{**solve, "seeds": 1}, l2_regs=[1024.0])  # warm-up: BLAS threads, allocator
    one = _time_solves(**solve, l2_regs=[1024.0])
    three = _time_solves(**solve, l2_regs=[256.0, 1024.0, 4096.0])

    n = len(train_y)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print("| train (n x d) | test | classes | seeds | s per solve, 1 lambda | s per solve, 3 lambdas |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {n:,} x {args.dim} | {args.test:,} | {args.classes} | {args.seeds} "
        f"| {statistics.mean(one):.2f} (min {min(one):.2f}) "
        f"| {statistics.mean(three):.2f} (min {min(three):.2f}) |"
    )


if __name__ == "__main__":
    main()
