"""`vit pretrain` and `vit finetune`: a recipe trained into a run directory (fine-tuning is training with
`train.init_from`, a new head and another schedule)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from vitcli import __version__, files
from vitcli.recipe import schema
from vitcli.data import Split
from vitcli.recipe.config import RecipeCfg
from vitcli.recipe.length import resolve_length
from vitcli.engine.jobs.preamble import session, with_splits
from vitcli.engine.persistence import rundir, sessions
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.runtime.signals import StopRequest
from vitcli.engine.train.trainer import Trainer, prepare
from vitcli.weights import reader
from vitcli.weights.model_card import write_model_card
from vitcli.weights.run_model import save_run_model


def recipe_as_json(recipe_data: dict) -> str:
    """The default text of a run's recipe.yaml when the caller renders none."""
    return json.dumps(recipe_data, indent=1) + "\n"  # JSON is YAML too: `vit recipe show` reads it


def train(cfg: RecipeCfg, out: Path, *, resume: bool = False, allowed_changes: frozenset[str] = frozenset(),
          resume_hint: str = "", log: Reporter | None = None, render: Callable[[dict], str] = recipe_as_json,
          command: str = "", reproduce: str | None = None, init: reader.Pretrained | None = None) -> dict:
    """Run `fit` for a recipe into run directory `out`; return the final evaluation and where things are.

    The recipe becomes plain data once, here: recipe.json, every checkpoint and config.json store that
    same dict. `render` turns it into the text of the run's recipe.yaml; the CLI passes `recipe.dump`
    (block-style YAML), since the engine never imports a YAML library.

    The results (also in `out/results.json`) say how long it took (`train_s`: training, `wall_s`: the
    whole processes, both over every session that worked on the run), when (`date`, UTC, of this session),
    with which vit and `command` (what the user typed, as the caller reports it), and `sessions`: each
    session's command, date and wall_s; the model card shows `reproduce` (default: `command`). A start that fails before training begins removes the run
    directory it made (`rundir.undone_on_failure`). `init`: train.init_from's checkpoint, read already.
    """
    part = sessions.start(command)
    with session(cfg, log) as (rt, log):
        if rt.restarts and not resume and rundir.holds_run(out):
            # torchrun --max-restarts (or a requeued SLURM job) runs the same command again: continue.
            log.info(f"restart {rt.restarts} of this job: resuming {out} from its last checkpoint")
            resume = True
        cfg = with_splits(cfg, "train", log.info)
        cfg, split = prepare(cfg, log)  # before recipe.json: it records the splits and length chosen here
        recipe_data = schema.to_dict(cfg)
        recipe_text = render(recipe_data)
        created = rundir.new_folders(out) if rt.is_main and not resume else []
        # One writer per run directory, for the run's whole life (the lock goes when the process does).
        with rundir.writer(out, resume=resume) if rt.is_main else contextlib.nullcontext(), \
                rundir.undone_on_failure(created) as begun:
            trainer = _open(cfg, rt, out, log, resume, (recipe_text, recipe_data), allowed_changes, init, split)
            trainer.session = part  # recorded in each checkpoint, for results.json's history of the run
            begun()
            summary = _fit(trainer, out, resume_hint)
            weights = trainer.setup.raw_state_dict()  # a collective under FSDP: every rank calls it
            if rt.is_main:
                save_run_model(out, trainer.setup, recipe_data, weights, trainer.label_names, log.info)
                summary.update(**sessions.totals(trainer.sessions_before, part, summary["train_s"]),
                               date=part.date, vit_version=__version__, command=command)
                files.write_json(out / "results.json", summary)
                write_model_card(out, name=cfg.run.name, model=trainer.setup.description, recipe=recipe_data,
                                 results=summary, label_names=trainer.label_names,
                                 command=command if reproduce is None else reproduce)
                log.info(f"saved {out}/model.safetensors (and results.json, README.md, metrics.jsonl, checkpoints/)")
            return summary


def _open(cfg: RecipeCfg, rt: Runtime, out: Path, log: Reporter, resume: bool, recipe: tuple[str, dict],
          allowed: frozenset[str], init: reader.Pretrained | None, split: Split) -> Trainer:
    """The run directory prepared (a resume: checked against `recipe`, its text and data) and its trainer
    on the open training `split`."""
    recipe_text, recipe_data = recipe
    if rt.is_main:
        # A run recorded by an older vit gets its fine-tuning length resolved as this recipe's was.
        rundir.prepare(out, recipe_text, recipe_data, resume=resume, allowed=set(allowed),
                       resolve=lambda old: resolve_length(old, split.num_examples)[0])
        log.info(f"run directory: {out}")
    rt.barrier()
    rt.seed_everything()
    # A resume reads and checks its checkpoint here.
    trainer = Trainer(cfg, rt, out, log, resume=resume, recipe_data=recipe_data, init=init, split=split)
    if resume and rt.is_main:
        rundir.record(out, recipe_text, recipe_data)  # only now is the resume known to be valid
    return trainer


def _fit(trainer: Trainer, out: Path, resume_hint: str) -> dict:
    """Train to the end or to a stop request; what was trained and the final evaluation."""
    try:
        with StopRequest(resume_hint or f"--resume --out {out}") as stop:
            results = trainer.run(stop)
    finally:
        trainer.metrics.close()  # the TensorBoard event file
    # train_examples: the size of the split trained on (a sweep reports what its final model saw).
    return {"out": str(out), "steps": trainer.pos.step, "train_examples": trainer.train_split.num_examples,
            **results, "train_s": round(trainer.train_seconds, 3)}
