"""Build the model a run trains: variant, initial weights, frozen parts, EMA, parallel wrapper, compile.

The raw module (timm key names, no wrapper prefixes) is what gets saved; the wrapped one is what the
loop calls. Keeping both here means checkpoints never contain `module.` or `_orig_mod.` prefixes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from vitcli.recipe.config import RecipeCfg
from vitcli.engine.runtime.parallel import wrap
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train import batching, optim
from vitcli.errors import RecipeError
from vitcli.models import build_model, describe, resolve_variant, seq_len
from vitcli.weights import reader
from vitcli.weights.restore import Restored, restore


@dataclass
class ModelSetup:
    """The trained model in its raw and wrapped forms, plus its EMA copy."""

    model: nn.Module  # raw module: timm key names, what is saved and evaluated
    train_model: nn.Module  # what the training loop calls (DDP/FSDP and/or compiled)
    description: dict
    act_bytes: int  # estimated training memory per image, for the automatic micro-batch
    ema: nn.Module | None = None  # timm ModelEmaV3; the averaged weights are `ema.module`
    sharded: bool = False  # FSDP2: parameters are DTensor shards; gathering them is a collective
    restored: Restored | None = None  # what starting from train.init_from took (None: trained from scratch)

    # Full (unsharded) state dicts keyed by parameter name: the same checkpoint loads whether it was
    # written by one process, by DDP or by FSDP2, and under any world size. Under FSDP the gather is a
    # collective (every rank calls it) and only rank 0 receives the tensors.
    _FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
    _LOAD = StateDictOptions(full_state_dict=True)

    @property
    def trainable(self) -> nn.Module:
        return self.model

    def raw_state_dict(self) -> dict[str, torch.Tensor]:
        """Full weights with timm key names (on rank 0 only, under FSDP)."""
        state = get_model_state_dict(self.model, options=self._FULL)
        return {k: v.detach().clone() for k, v in state.items()}

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """Optimiser state keyed by parameter name, so it survives a change of world size."""
        return get_optimizer_state_dict(self.model, optimizer, options=self._FULL)

    def load_optimizer(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Restore `optimizer_state`'s output; state for parameters this optimiser does not hold is refused
        (ValueError) before loading: torch takes it, and fails only at the next checkpoint, mid-run."""
        groups = state.get("param_groups") or ()
        if len(groups) != len(optimizer.param_groups):
            raise ValueError(f"{len(groups)} parameter groups in the optimiser state, {len(optimizer.param_groups)} "
                             "in this run's optimiser")
        names = {id(p): n for n, p in self.model.named_parameters()}
        mine = {names.get(id(p)) for group in optimizer.param_groups for p in group["params"]}
        given = {p for group in groups for p in group.get("params", ())}
        stray = sorted(map(str, (set(state.get("state") or {}) | given) - mine))
        if stray:
            raise ValueError(f"optimiser state for parameters this run does not train ({', '.join(stray[:3])})")
        set_optimizer_state_dict(self.model, optimizer, state, options=self._LOAD)

    def ema_state_dict(self) -> dict[str, torch.Tensor] | None:
        if self.ema is None:
            return None
        return {k: v.detach().cpu().clone() for k, v in self.ema.module.state_dict().items()}

    def load_raw(self, state: dict, ema_state: dict | None) -> None:
        """Restore weights saved by `raw_state_dict` (resume); every weight must be there (torch would keep
        a missing one as initialised, without a word): ValueError."""
        missing = sorted(set(self.model.state_dict()) - set(state))
        if missing:
            raise ValueError(f"missing weights {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        set_model_state_dict(self.model, state, options=self._LOAD)
        if self.ema is not None and ema_state is not None:
            self.ema.module.load_state_dict(ema_state)

    def update_ema(self, step: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=step)

    def no_sync(self, skip: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulated step."""
        if skip and hasattr(self.train_model, "no_sync"):
            return self.train_model.no_sync()
        return contextlib.nullcontext()

    def eval_models(self, which: str = "both") -> list[tuple[str, nn.Module]]:
        """(metric prefix, module) pairs to evaluate: the raw weights and, when kept, the EMA ones."""
        models = [("", self.model)]
        if self.ema is not None and which in ("both", "ema"):
            models = [("ema_", self.ema.module)] if which == "ema" else models + [("ema_", self.ema.module)]
        return models


def setup_model(cfg: RecipeCfg, num_classes: int, rt: Runtime, log: Reporter,
                prepare: Callable[[nn.Module], None] | None = None,
                init: reader.Pretrained | None = None) -> ModelSetup:
    """Build, initialise, freeze, average and wrap the model of a recipe.

    A fine-tune (`train.init_from`) starts from that checkpoint's weights with a new head (`restore`): `init`
    is the checkpoint when the caller read it already, so that a command reads the file once.
    `prepare` (the objective's) adds the objective's own parts to the model once its weights are in.
    """
    restored = None
    if cfg.train.init_from:
        given = init is not None and str(init.path) == cfg.train.init_from  # --set may name another file
        source = init if given else reader.read(cfg.train.init_from)
        # The raw weights, not the EMA copy: what fine-tunes have always started from.
        model, restored = restore(source, cfg.model, new_head=num_classes, weights="raw", log=log.info)
    else:
        model = build_model(cfg.model, num_classes)
    if prepare is not None:
        prepare(model)
    if cfg.train.freeze:
        frozen = optim.freeze(model, cfg.train.freeze)
        log.info(f"frozen: {', '.join(cfg.train.freeze)} ({frozen:,} parameters)")
    model.to(rt.device)
    sharded = rt.distributed and cfg.train.parallel == "fsdp"
    ema = None
    if cfg.train.ema and sharded:
        raise RecipeError("train.ema: Polyak averaging is not available with train.parallel: fsdp; "
                          "use parallel: ddp or set train.ema: null")
    if cfg.train.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.train.ema)
    variant = resolve_variant(cfg.model)
    act = batching.activation_bytes(variant.depth, seq_len(variant, cfg.model.res), variant.width,
                                    cfg.train.precision, cfg.train.grad_checkpointing)
    if cfg.train.grad_checkpointing:
        model.set_grad_checkpointing(True)  # timm's: each block's activations recomputed in backward
        log.info("gradient checkpointing: block activations are recomputed in the backward pass")
    train_model = wrap(model, cfg.train, rt)
    if cfg.train.compile:
        train_model = torch.compile(train_model)
    return ModelSetup(model, train_model, describe(cfg.model, num_classes), act, ema, sharded, restored)
