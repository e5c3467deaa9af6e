"""train.grad_checkpointing: the same step, the same gradients, less kept for backward."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_recipe

from vitcli import recipe
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train.batching import activation_bytes
from vitcli.engine.train.step import TrainStep


def steps(objective: str, checkpointing: bool, where: str) -> tuple[list[torch.Tensor], int]:
    body = tiny_recipe("x", train={"grad_checkpointing": checkpointing, "objective": objective, "micro_batch": 8},
                       model={"posemb_where": where})
    cfg = recipe.from_data(body, "test")
    torch.manual_seed(0)
    step = TrainStep(cfg, 0 if objective == "masked_patch" else 4, Runtime.create("cpu", "fp32", 0),
                     Reporter(enabled=False))
    assert step.setup.model.grad_checkpointing is checkpointing
    calls, attn = [], step.setup.model.blocks[0].attn
    forward = attn.forward
    attn.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
    gen = torch.Generator().manual_seed(1)
    batch = [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen))]
    torch.manual_seed(2)  # the masked-patch corruption draws from the global generator
    step.run(copy.deepcopy(batch), 0.01, 0)
    return [p.detach().clone() for p in step.setup.model.parameters()], len(calls)


@pytest.mark.parametrize("objective, where", [("supervised", "stem"), ("masked_patch", "stem"),
                                               ("supervised", "every_layer")])
def test_checkpointed_blocks_train_to_the_same_weights(objective, where):
    (plain, once), (checkpointed, twice) = steps(objective, False, where), steps(objective, True, where)
    assert (once, twice) == (1, 2)  # the block ran again in the backward pass: its activations were not kept
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_the_micro_batch_planner_counts_on_the_smaller_activations():
    full = activation_bytes(24, 197, 1024, "bf16")
    assert activation_bytes(24, 197, 1024, "bf16", checkpointing=True) < full / 8
