"""`fit()`: the one training loop that pretraining and fine-tuning share.

Fine-tuning is this loop with `train.init_from`, a new zero head and another schedule; evaluation-only
is zero steps. The loop counts optimiser steps only; epochs exist just to reshuffle the data.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from vitcli.recipe import schema
from vitcli.recipe.config import AUTO, RecipeCfg
from vitcli.recipe.length import resolve_length, resolve_steps
from vitcli.data import Split, load_split, train_loader
from vitcli.data.checks import check_labels
from vitcli.engine.evaluate.evaluators import build_evaluators, run_evaluators
from vitcli.engine.persistence import checkpoints, rundir, sessions
from vitcli.engine.persistence.metrics_log import MetricsLog
from vitcli.engine.runtime.faults import collective_error, is_collective_error
from vitcli.engine.runtime.process import Runtime, rng_state, set_rng_state
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.runtime.signals import StopRequest
from vitcli.engine.train import batching, optim, stream_position
from vitcli.engine.train.best import Best
from vitcli.engine.train.step import TrainStep
from vitcli.errors import CheckpointError, RecipeError, RunError, VitError, first_line
from vitcli.formats import duration, plural, rough_duration
from vitcli.models import describe
from vitcli.models.variants import macs, resolve_variant
from vitcli.weights import reader
from vitcli.weights.run_model import save_run_model


@dataclass
class Position:
    """Where the run is: restored exactly on resume, so the data stream continues mid-epoch."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    epoch_step: int = 0  # steps done within the current epoch
    skipped: int = 0  # non-finite steps skipped so far


PACE_STEPS = 5  # steps timed (after the first) before the projected length of the run is printed


def prepare(cfg: RecipeCfg, log: Reporter) -> tuple[RecipeCfg, Split]:
    """The recipe as the run will train it, and its open training split (labels checked).

    The length is resolved (`recipe.length`: a fine-tune without one gets the paper's, which needs the
    data set's size), so the caller records exactly what will run. `auto` splits must be chosen first."""
    if AUTO in (cfg.data.train_split, cfg.data.eval_split):  # a programming error, not a user's
        raise ValueError("Trainer: data splits 'auto' must be chosen first (jobs.preamble.with_splits, as "
                         "jobs.train does before it records the run's recipe)")
    data, supervised = cfg.data, cfg.train.objective == "supervised"
    split = load_split(data.source, data.train_split, image_column=data.image_column,
                       label_column=data.label_column, num_classes=data.num_classes,
                       streaming=data.streaming, labels=supervised)
    if split.note:
        log.info(split.note)
    if supervised:
        check_labels(split)  # a label outside the classes fails now, not at the first batch
    cfg, note = resolve_length(cfg, split.num_examples)
    if note:
        log.info(note)
    return cfg, split


class Trainer:
    """Holds everything one run needs; `run()` trains to the end or to a stop request."""

    def __init__(self, cfg: RecipeCfg, rt: Runtime, out: Path, reporter: Reporter, resume: bool = False, *,
                 recipe_data: dict | None = None, init: reader.Pretrained | None = None,
                 split: Split | None = None):
        """`cfg` and `split` as `prepare` returns them (jobs.train records that recipe first); without a
        `split`, the Trainer prepares them itself."""
        if split is None:
            cfg, split = prepare(cfg, reporter)
        self.cfg, self.rt, self.out, self.log = cfg, rt, Path(out), reporter
        # The resolved recipe as plain data, stored in every checkpoint: jobs.train passes the dict that
        # recipe.json and config.json hold; a Trainer built on its own makes it.
        self.recipe_data = recipe_data if recipe_data is not None else schema.to_dict(cfg)
        supervised = cfg.train.objective == "supervised"
        self.train_split = split
        self.num_classes = self.train_split.num_classes if supervised else 0  # self-supervised: no head
        self.label_names = self.train_split.class_names  # travel with the model: checkpoints and export
        # The step: model, optimiser and objective; the trainer feeds it data and keeps the run's records.
        # `init`: train.init_from as the caller read it already (else the step reads it)
        self.step = TrainStep(cfg, self.num_classes, rt, reporter, on_nonfinite=self._nonfinite, init=init)
        self.objective, self.setup, self.optimizer = self.step.objective, self.step.setup, self.step.optimizer
        self.peak_lr = self.step.peak_lr
        self.model = self.setup.model
        self.total = resolve_steps(cfg.train, self.train_split.num_examples)
        self.batches = batching.plan(cfg.train.batch_size, rt.world, cfg.train.micro_batch,
                                     self.setup.act_bytes, rt.device)
        self.steps_per_epoch = self._steps_per_epoch()
        self.evaluators = build_evaluators(cfg, rt, self.num_classes, reporter, self.label_names)
        self.metrics = MetricsLog(self.out / "metrics.jsonl" if rt.is_main else None, cfg.run.report_to,
                                  name=cfg.run.name or self.out.name, params=self.recipe_data)
        self.best = Best(cfg.train, self.out, rt.is_main)  # train.keep_best and train.early_stop
        self.pos = Position()
        self.seconds_before = 0.0  # training time of earlier processes of this run (resumed runs)
        self.sessions_before: list[dict] = []  # the earlier processes' commands and wall times (sessions.py)
        self.session = sessions.start("")  # this process's; jobs.train names its command
        self.bar = self.loader = self.resume_stream = None  # (the loader: its stream position is saved)
        if resume:
            self._restore()
        self._check_warmup()
        self._summary()

    def _summary(self) -> None:
        """What the run is about to do, before the first step: model, data, batch, length, where."""
        cfg, rt, split = self.cfg, self.rt, self.train_split
        desc = describe(cfg.model, self.num_classes)
        params = sum(p.numel() for p in self.model.parameters())
        gflops = 2 * macs(resolve_variant(cfg.model), cfg.model.res, max(self.num_classes, 1)) / 1e9
        images, classes = (f"{split.num_examples:,} images" if split.num_examples is not None else "streamed",
                           f", {plural(self.num_classes, 'class', 'classes')}" if self.num_classes else " (no labels)")
        held_out = f"; evaluated on [{cfg.data.eval_split}]" if cfg.data.eval_split else "; no evaluation split"
        epochs = self.total / self.steps_per_epoch
        self.log.summary("run summary", {
            "model": f"{desc['variant']}: {params / 1e6:.2f} M parameters, {gflops:.3g} GFLOPs per image "
                     f"at {cfg.model.res[0]}x{cfg.model.res[1]} px",
            "data": f"{cfg.data.source} [{cfg.data.train_split}]: {images}{classes}{held_out}",
            "batch": self.batches.describe(),
            "length": f"{plural(self.total, 'step')} = {epochs:.3g} epochs ({self.steps_per_epoch} per epoch)",
            "precision": f"{cfg.train.precision}{', compiled' * cfg.train.compile} on {rt.world} x {rt.device.type}",
            "out": str(self.out)}, {
            "model": desc["variant"], "params": params, "gflops_per_image": gflops, "res": list(cfg.model.res),
            "source": cfg.data.source, "train_split": cfg.data.train_split, "train_images": split.num_examples,
            "classes": self.num_classes, "eval_split": cfg.data.eval_split, "global_batch": self.batches.global_batch,
            "processes": rt.world, "accumulation": self.batches.accum, "micro_batch": self.batches.micro,
            "steps": self.total, "epochs": epochs, "precision": cfg.train.precision, "device": rt.device.type,
            "out": str(self.out)})

    def _check_warmup(self) -> None:
        """A warm-up longer than the run would never reach the peak lr (or decay): say so, in one line."""
        warmup, total = self.cfg.schedule.warmup_steps, self.total
        if warmup > total > 0:
            raise RecipeError(f"schedule.warmup_steps {warmup} is longer than the whole run of {total} steps; "
                              f"give at most {total} warm-up steps (e.g. --set schedule.warmup_steps="
                              f"{total // 10}) or a longer run")

    def _steps_per_epoch(self) -> int:
        n = self.train_split.num_examples
        if n is None:  # streaming: no epochs, the stream is the data
            return 1 << 62
        per_rank = math.ceil(n / self.rt.world)
        steps = per_rank // self.batches.per_rank
        if steps == 0 and self.total > 0:
            raise RecipeError(f"train.batch_size {self.cfg.train.batch_size} is larger than the "
                              f"{n} examples of {self.cfg.data.source} [{self.cfg.data.train_split}]; give at "
                              f"most {n} (--set train.batch_size={min(n, 16)}, say)")
        return max(1, steps)

    # -- state ---------------------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue bit for bit: weights, optimiser, EMA, RNG, data position."""
        return {
            "model": self.setup.raw_state_dict(),
            "ema": self.setup.ema_state_dict(),
            "optimizer": self.setup.optimizer_state(self.optimizer),
            "position": asdict(self.pos),
            "rng": rng_state(),
            "model_config": self.setup.description,
            reader.LABEL_NAMES: self.label_names,
            "recipe": self.recipe_data,
            "train_seconds": self.train_seconds,
            "best": self.best.state(),
            "sessions": [*self.sessions_before, sessions.current(self.session)],
        }

    @property
    def train_seconds(self) -> float:
        """Seconds spent training so far, over every process that worked on this run."""
        return self.bar.seconds if self.bar is not None else self.seconds_before

    def _restore(self) -> None:
        """Continue from the last checkpoint; every check comes before the first change to the run."""
        last = reader.latest(self.out)
        state = checkpoints.load(last) if last is not None else None
        rundir.check_restart(self.out, last, state["position"]["step"] if state else 0, self.total)
        if last is None:
            self.log.info(f"--resume: no checkpoint in {self.out} yet; starting from step 0")
            self.metrics.truncate_after(0)  # rows of the killed attempt would appear twice
            return
        done = state["position"]["step"]
        if done > self.total:
            raise RunError(f"--resume: {last} is at step {done}, past the {self.total} steps this recipe asks for; "
                           f"a run cannot be shortened: resume with --set train.steps={done} or more, or start a "
                           "new --out")
        try:
            self.setup.load_raw(state["model"], state.get("ema"))
            self.setup.load_optimizer(self.optimizer, state["optimizer"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(f"--resume: {last} does not fit this run's model or optimiser "
                                  f"({first_line(exc, limit=200)}); resume with the recipe it was "
                                  "trained with") from None
        try:
            set_rng_state(state["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(f"--resume: {last}: rng: not a valid random-generator state "
                                  f"({first_line(exc, limit=120)})") from None
        self.pos = Position(**state["position"])
        self.resume_stream = stream_position.restored(state.get("stream"), self.rt, self.pos.epoch, last)
        self.best.load_state(state.get("best"))
        if self.best.stopped:  # the run had stopped early: it stays stopped
            self.total = min(self.total, self.pos.step)
        seconds = state.get("train_seconds")  # only shown and reported: a checkpoint without it counts 0
        self.seconds_before = float(seconds) if isinstance(seconds, (int, float)) else 0.0
        self.sessions_before = sessions.restored(state.get("sessions"), self.seconds_before)
        self._say_lengthened(state.get("recipe"), done, last)
        self.metrics.truncate_after(self.pos.step, rerun_eval=self.pos.step >= self.total)
        self.log.info(f"resumed from {last} at step {self.pos.step} (epoch {self.pos.epoch})")

    def _say_lengthened(self, stored, done: int, last: Path) -> None:
        """A run resumed with another length: one line on where its learning-rate schedule goes from here."""
        try:
            before = resolve_steps(schema.from_dict(stored, str(last)).train, self.train_split.num_examples)
        except (VitError, TypeError, AttributeError):
            return  # an older checkpoint without a readable recipe: nothing to compare
        if before == self.total or done == 0:
            return
        sched, peak = self.cfg.schedule, self.peak_lr
        was, now = optim.lr_at(done - 1, before, peak, sched), optim.lr_at(done, self.total, peak, sched)
        self.log.info(f"lengthened from {before} to {self.total} steps: the {sched.decay} schedule is laid out "
                      f"again over {self.total} steps, so the learning rate goes from {was:.3g} (step {done} of "
                      f"{before}) to {now:.3g} at step {done + 1}" + (" (it had decayed: training warms up again)"
                                                                       if done >= before and now > was else ""))

    def save(self) -> Path | None:
        """Write a checkpoint at the current step; only the main process writes."""
        path, stream = None, stream_position.gather(self.loader, self.rt)  # each rank's (a collective)
        # Under FSDP every rank takes part in gathering the state; otherwise only rank 0 needs it.
        state = self.state() if self.rt.is_main or self.setup.sharded else None
        if self.rt.is_main:
            state["stream"] = stream
            path = checkpoints.save(self.out, state, self.pos.step, self.cfg.train.keep_checkpoints)
        self.rt.barrier()
        return path

    # -- loop ----------------------------------------------------------------------------------------
    def run(self, stop: StopRequest) -> dict:
        """Train to `total` steps (or until `stop` is set), evaluating and checkpointing on the way."""
        cfg = self.cfg.train
        self.bar = self.log.task("train", self.total, done=self.pos.step, per_item=self.batches.global_batch,
                                 elapsed=self.seconds_before, status=self._status(None))
        timer = (time.perf_counter(), self.pos.step)
        self._pace: tuple[float, int] | None = None  # (time, step) after this process's first step
        try:
            self._loop(stop, timer)
        except RuntimeError as exc:  # a peer that failed, died or hangs: one line naming this rank and step
            if not (self.rt.distributed and is_collective_error(exc)):
                raise
            raise collective_error(exc, self.rt.rank, self.pos.step + 1, self.rt.timeout, self.rt.peers) from None
        finally:
            self.bar.close()
        self.log.info(f"trained {plural(self.pos.step, 'step')} in {duration(self.train_seconds)}")
        # The last checkpoint comes before the final evaluation, which writes nothing else to resume from:
        # a signal during it stops at once and the resume evaluates again.
        if self.total > 0 and (cfg.checkpoint_every == 0 or self.pos.step % cfg.checkpoint_every):
            self.save()
        saved = reader.latest(self.out) if self.rt.is_main else None
        with stop.immediately(lambda: stop.exit(saved, self.pos.step)):
            results = run_evaluators(self.evaluators, self.setup, self.pos.step, self.metrics, self.log, final=True)
            self._judge(results)
            return results

    def _loop(self, stop: StopRequest, timer: tuple[float, int]) -> None:
        while self.pos.step < self.total:
            for micro_batches in self._epoch_batches():
                self._step(micro_batches)
                timer = self._after_step(timer)
                # Every rank stops at the same step: a signal reaches processes at slightly different
                # times, and a rank that went on alone would wait for the others in its next step.
                if self.rt.any_rank(stop.requested):
                    stop.join()
                    raise stop.exit(self.save(), self.pos.step)
                if self.pos.step >= self.total:
                    break

    def _epoch_batches(self):
        """Yield lists of `accum` micro-batches: one list per optimiser step, from the saved position."""
        plan = self.batches
        loader = train_loader(self.train_split, self.cfg.data, self.cfg.model.res, plan.micro,
                              seed=self.cfg.train.seed, epoch=self.pos.epoch,
                              start=self.pos.epoch_step * plan.per_rank, rank=self.rt.rank, world=self.rt.world,
                              channels=self.cfg.model.in_chans, device=self.rt.device, resume=self.resume_stream)
        self.loader, self.resume_stream, group = loader, None, []
        for batch in loader:
            group.append(batch)
            if len(group) == plan.accum:
                yield group
                group = []
                if self.pos.epoch_step >= self.steps_per_epoch:
                    break
        self.pos.epoch, self.pos.epoch_step = self.pos.epoch + 1, 0

    def _step(self, micro_batches: list) -> None:
        lr = optim.lr_at(self.pos.step, self.total, self.peak_lr, self.cfg.schedule)
        result = self.step.run(micro_batches, lr, self.pos.step)
        self.last = {"loss": result.loss, "grad_norm": result.grad_norm, "lr": lr, "extra": result.extra}
        self.pos.step += 1
        self.pos.epoch_step += 1

    def _nonfinite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """The step's hook for a NaN/inf loss or gradient: skip up to train.skip_nonfinite, then stop."""
        self.pos.skipped += 1
        last = reader.latest(self.out) if self.rt.is_main else None
        if self.pos.skipped > self.cfg.train.skip_nonfinite:
            raise RunError(
                f"non-finite loss or gradient at step {self.pos.step + 1} (loss {loss.item():.4g}, grad norm "
                f"{grad_norm.item():.4g}); last good checkpoint: {last or 'none yet'}; likely causes: a learning "
                "rate too high for this batch size, or bf16 overflow (try train.precision: fp32); "
                "train.skip_nonfinite: N skips up to N such steps")
        self.log.warn(f"step {self.pos.step + 1}: non-finite loss/gradient, update skipped "
                      f"({self.pos.skipped}/{self.cfg.train.skip_nonfinite} allowed)")

    def _project(self) -> None:
        """Once, after the first few steps: the measured time per step and what the whole run will take.

        Timed from the end of this process's first step, which also pays for one-off work (decoding a
        cached data set, the first allocations), so the projection is not skewed by it.
        """
        now, step = time.perf_counter(), self.pos.step
        if self._pace is None:
            self._pace = (now, step)
            return
        started, first = self._pace
        if step - first != PACE_STEPS or step >= self.total:
            return
        per_step = (now - started) / (step - first)
        left = per_step * (self.total - step)
        self.log.info(f"measured {per_step:.3g} s per step over steps {first + 1}-{step}: {self.total} steps take "
                      f"about {rough_duration(per_step * self.total)} (another {rough_duration(left)}, ending around "
                      f"{time.strftime('%H:%M', time.localtime(time.time() + left))}; evaluations extra)")

    def _after_step(self, timer: tuple[float, int]) -> tuple[float, int]:
        self._project()
        cfg, step = self.cfg.train, self.pos.step
        logged = step % cfg.log_every == 0 or step == self.total
        if logged:
            now = time.perf_counter()
            img_s = (step - timer[1]) * self.batches.global_batch / max(now - timer[0], 1e-9)
            names = sorted(self.last["extra"])
            values = torch.stack([self.last["loss"].detach(), *(self.last["extra"][n] for n in names)]).float()
            if self.rt.distributed:  # log the metrics of the global batch, not of rank 0's share
                dist.all_reduce(values)
                values /= self.rt.world
            row = {"step": step, "epoch": round(self._epoch_float(), 4), "loss": float(values[0]),
                   **{n: round(float(v), 6) for n, v in zip(names, values[1:].tolist())},
                   "lr": self.last["lr"], "grad_norm": float(self.last["grad_norm"]), "img_s": round(img_s, 2)}
            self.metrics.write(row)
            timer = (now, step)
        self.bar.update(step, self._status(self.last))
        every = self.cfg.eval.every
        if every and step % every == 0 and step < self.total:
            self._judge(run_evaluators(self.evaluators, self.setup, step, self.metrics, self.log, final=False))
            timer = (time.perf_counter(), step)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            self.save()
        return timer

    def _judge(self, results: dict) -> None:
        """Keep best/ and count towards early stopping; a stop ends the run at this step, as if it were the last."""
        was = self.best.kept.step
        if self.best.judge(self.pos.step, results, self._save_model) and self.pos.step < self.total:
            watched = self.best.watched
            self.log.info(f"early stop at step {self.pos.step}: {self.cfg.train.early_stop.metric} has not improved "
                          f"for {watched.stale} evaluations (best {watched.value:.4g} at step {watched.step})")
            self.total = self.pos.step
        if self.best.kept.step != was:
            self.log.info(f"best {self.cfg.train.keep_best} so far ({self.best.kept.value:.4g}): weights kept in "
                          f"{self.out / 'best'}")

    def _save_model(self, folder: Path | None) -> None:
        weights = self.setup.raw_state_dict()  # a collective under FSDP: every rank calls it
        if folder is not None:
            save_run_model(folder, self.setup, self.recipe_data, weights, self.label_names, log=lambda _: None)

    def _status(self, last: dict | None):
        """The display's figures of the step just done; read (a device sync) only when drawn."""
        epochs = ("" if self.steps_per_epoch >= 1 << 62
                  else f"epoch {min(self.pos.epoch + 1, math.ceil(self.total / self.steps_per_epoch))}/"
                       f"{math.ceil(self.total / self.steps_per_epoch)}")
        if last is None:
            return epochs
        extra = last.get("extra", {})  # objective-specific figures, e.g. masked-patch accuracy
        return lambda: " ".join([epochs, f"loss {float(last['loss']):.4f}",
                                 *(f"{n} {float(v):.4f}" for n, v in sorted(extra.items())),
                                 f"lr {last['lr']:.2e}"]).strip()

    def _epoch_float(self) -> float:
        return self.pos.epoch + self.pos.epoch_step / self.steps_per_epoch
