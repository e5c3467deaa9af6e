"""The value checks of a recipe that types alone cannot express: ranges, limits and relations.

Called once by `recipe.from_data`, after the schema has built the config: every value the engine,
models and data loaders receive has passed here, so they need not check recipe values again (their own
errors speak of their own domain). Each problem is one `RecipeError` that blames where the value came
from: the `--set` (or command option) that gave it, else the recipe file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

from vitcli.recipe import length
from vitcli.recipe.config import RecipeCfg
from vitcli.errors import RecipeError, VitError, one_of
from vitcli.formats import si

MAX_TOKENS = 65536  # patches per image (e.g. 4096x4096 at patch 16); more cannot train or infer in memory
MAX_SIDE = 16384  # pixels per side: one 16384^2 image is already 3 GB as float32
MAX_CLASSES = 1_000_000  # a head this wide is 1e6 x width weights; ImageNet-21k has 21,843 classes
MAX_BATCH = 1 << 16  # images in one micro-batch or evaluation batch
MAX_GLOBAL_BATCH = 1 << 24
# Memory bounds on what a setting multiplies (the same kind of bound as MAX_SIDE and MAX_TOKENS): past
# them no accelerator (an H200 holds 141 GB) nor a usual host can hold what the setting asks for.
MAX_IMAGE_BYTES = 16 * 10**9  # one image's relative-position logits, over every block (training keeps them all)
MAX_BATCH_BYTES = 128 * 10**9  # one batch's forward activations in one block
MAX_WEIGHT_BYTES = 32 * 10**9  # the weights as float32 (8e9 parameters; training holds about 4x this)
MAX_SEEDS = 1000  # random draws per shot count of the few-shot evaluation (fewshot.seeds, --seeds)
MAX_SEED = 2**32 - 1  # numpy's generator takes 32-bit seeds; torch's take 64 bits
_SIZES = {"width": 16384, "depth": 1024, "heads": 1024, "mlp_dim": 1 << 18, "patch": 1024,
          "representation_size": 1 << 16}
_RANGE = re.compile(r"(.+)\.(\d+)-(\d+)")

Bad = Callable[[str, str], RecipeError]


def check(cfg: RecipeCfg, origin: str, given: dict[str, str] | None = None) -> None:
    """Raise one RecipeError for the first value out of range; `given` maps dotted keys to the option
    (`--set optim.lr=0`, `--res big`) that set them, so the error names that instead of the file."""
    given = given or {}

    def bad(path: str, problem: str) -> RecipeError:
        who = given.get(path) or next((v for k, v in given.items() if path.startswith(k + ".")), origin)
        return RecipeError(f"{who}: {path}: {problem}")

    _check_optim(cfg, bad)
    _check_train(cfg, bad)
    _check_data(cfg, bad)
    _check_trackers(cfg, bad)
    _check_fewshot(cfg, bad)
    _check_names(cfg, bad)
    _check_mpp(cfg, bad)
    _check_model(cfg, bad, given, origin)


def _interval(bad: Bad, values: dict, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
    """Each non-None value must lie in the interval; the message writes it as [lo, hi), (lo, hi] ..."""
    if hi == float("inf"):
        shown = f"{'>' if lo_open else '>='} {_num(lo)}"
    else:
        shown = f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    for path, value in values.items():
        if value is None:
            continue
        if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
            raise bad(path, f"must be {shown}, got {_num(value)}")


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _check_optim(cfg: RecipeCfg, bad: Bad) -> None:
    o, s = cfg.optim, cfg.schedule
    lrs = o.lr if isinstance(o.lr, tuple) else (o.lr,)
    if not lrs:
        raise bad("optim.lr", "give at least one learning rate")
    for lr in lrs:
        if lr <= 0:
            raise bad("optim.lr", f"must be > 0, got {o.lr if not isinstance(o.lr, tuple) else list(o.lr)}")
    folders = [f"lr-{lr:g}" for lr in lrs]  # a sweep trains each in out/lr-<lr>: two may not share one
    same = next((i for i, name in enumerate(folders) if name in folders[:i]), None)
    if same is not None:
        first = lrs[folders.index(folders[same])]
        raise bad("optim.lr", f"{first!r} and {lrs[same]!r} would share the sweep's folder {folders[same]}; give each "
                  "learning rate once, differing in its first 6 digits")
    _interval(bad, {"optim.b1": o.b1, "optim.b2": o.b2, "optim.momentum": o.momentum}, 0, 1, hi_open=True)
    _interval(bad, {"optim.layer_decay": o.layer_decay}, 0, 1, lo_open=True)
    _interval(bad, {"optim.clip_norm": o.clip_norm}, 0, float("inf"), lo_open=True)
    _interval(bad, {"optim.weight_decay": o.weight_decay, "schedule.end_lr": s.end_lr,
                    "schedule.warmup_steps": s.warmup_steps}, 0, float("inf"))


def _check_train(cfg: RecipeCfg, bad: Bad) -> None:
    t, e = cfg.train, cfg.eval
    _interval(bad, {"train.batch_size": t.batch_size}, 1, MAX_GLOBAL_BATCH)
    _interval(bad, {"train.micro_batch": t.micro_batch, "eval.batch_size": e.batch_size,
                    "fewshot.batch_size": cfg.fewshot.batch_size}, 1, MAX_BATCH)
    _interval(bad, {"train.steps": t.steps, "train.examples": t.examples, "train.log_every": t.log_every,
                    "train.keep_checkpoints": t.keep_checkpoints}, 1, float("inf"))
    _interval(bad, {"train.epochs": t.epochs}, 0, 1e6, lo_open=True)
    _interval(bad, {"train.checkpoint_every": t.checkpoint_every, "train.skip_nonfinite": t.skip_nonfinite,
                    "eval.every": e.every}, 0, float("inf"))
    _interval(bad, {"train.seed": t.seed}, 0, MAX_SEED)
    _interval(bad, {"train.timeout": t.timeout}, 1, 7 * 24 * 3600)  # torch's own limit is a timedelta
    _check_best(cfg, bad)
    _interval(bad, {"train.label_smoothing": t.label_smoothing, "train.ema": t.ema}, 0, 1, hi_open=True)
    micro = t.micro_batch
    if micro is not None and t.batch_size % micro:
        raise bad("train.micro_batch", f"{micro} does not divide train.batch_size {t.batch_size}; "
                  f"valid: {one_of(_divisors(t.batch_size))}")
    given = length.given(t)
    if len(given) > 1:
        raise bad("train", f"give only one of steps, epochs or examples (got {', '.join(given)})")
    minival = cfg.sweep.minival  # split expressions take whole percents: train[:98%]
    if minival is not None and not (0 < minival <= 0.5 and abs(100 * minival - round(100 * minival)) < 1e-9):
        raise bad("sweep.minival", f"must be a whole percent of the train split in (0, 0.5], e.g. 0.02 or 0.1, "
                  f"got {minival:g}")


EVAL_METRICS = ("top1", "top5", "loss")  # what keep_best and early_stop may watch (ema_ for the EMA weights')


def _check_best(cfg: RecipeCfg, bad: Bad) -> None:
    """keep_best / early_stop name a metric the classification evaluator reports, and need evaluations."""
    t = cfg.train
    _interval(bad, {"train.early_stop.patience": t.early_stop.patience}, 1, 1e6)
    _interval(bad, {"train.early_stop.min_delta": t.early_stop.min_delta}, 0, 1e6)
    valid = [*EVAL_METRICS, *(f"ema_{m}" for m in EVAL_METRICS)]
    for key, metric in (("train.keep_best", t.keep_best), ("train.early_stop.metric", t.early_stop.metric)):
        if metric is None:
            continue
        if metric not in valid:
            raise bad(key, f"{metric!r} is not an evaluation metric; valid: {', '.join(valid)}")
        if metric.startswith("ema_") and not t.ema:
            raise bad(key, f"{metric!r} watches the EMA weights, but train.ema is off; use {metric[4:]!r}")
        if "classification" not in cfg.eval.evaluators or not cfg.eval.every:
            raise bad(key, "needs evaluations during training: set eval.every (steps between evaluations) "
                           "with the classification evaluator")


def _check_trackers(cfg: RecipeCfg, bad: Bad) -> None:
    """A tracker whose library is missing is refused before anything runs (find_spec imports nothing)."""
    import importlib.util

    for name in cfg.run.report_to:
        if name != "tensorboard" and importlib.util.find_spec(name) is None:
            raise bad("run.report_to", f"{name} needs the {name} package: pip install 'vitcli[{name}]'")


def _check_data(cfg: RecipeCfg, bad: Bad) -> None:
    d, m = cfg.data, cfg.model
    _interval(bad, {"model.dropout": m.dropout, "model.drop_path": m.drop_path,
                    "model.attn_dropout": m.attn_dropout}, 0, 1, hi_open=True)
    _interval(bad, {"data.min_area": d.min_area, "data.eval_crop": d.eval_crop}, 0, 1, lo_open=True)
    cover = max(m.res) / d.eval_crop  # evaluation resizes to cover res / eval_crop before the centre crop
    if cover > MAX_SIDE >= max(m.res):  # a res too large is model.res's to say (checked with the model)
        raise bad("data.eval_crop", f"{d.eval_crop:g} resizes images to cover {round(cover)} pixels a side before the "
                  f"centre crop of {m.res[0]}x{m.res[1]}, more than the {MAX_SIDE} a side vit allows (one such image is "
                  f"{3 * cover * cover * 4 / 1e9:.3g} GB as float32); valid: at least {max(m.res) / MAX_SIDE:.3g} "
                  "(timm's crop_pct, usually 0.875 to 1)")
    _interval(bad, {"data.max_bad_fraction": d.max_bad_fraction}, 0, 1)
    _interval(bad, {"data.mixup": d.mixup, "data.cutmix": d.cutmix}, 0, 1e3)
    _interval(bad, {"data.workers": d.workers}, 0, 256)
    _interval(bad, {"data.shuffle_buffer": d.shuffle_buffer}, 0, 10_000_000)
    if d.decode == "gpu" and (cfg.train.device == "cpu" or d.randaugment):
        why = "train.device is cpu" if cfg.train.device == "cpu" else "data.randaugment runs on PIL images"
        raise bad("data.decode", f"gpu decodes JPEGs on the run's CUDA device, but {why}; valid here: auto or cpu")
    _interval(bad, {"data.num_classes": d.num_classes}, 1, MAX_CLASSES)
    _interval(bad, {"model.reg_tokens": m.reg_tokens}, 0, 64)
    if m.init_values is not None and not (math.isfinite(m.init_values) and m.init_values > 0):
        raise bad("model.init_values", f"{m.init_values}: valid: a positive number (layer scale's start), or null")
    if m.distilled and (m.pool != "token" or m.reg_tokens or m.representation_size or m.posemb != "learned"):
        raise bad("model.distilled", "DeiT's distillation token needs model.pool token, a learned posemb, no "
                  "reg_tokens and no representation_size (timm builds no other distilled ViT)")
    if m.in_chans not in (1, 3):
        raise bad("model.in_chans", f"{m.in_chans} channels cannot be read from images; valid: 1 (grayscale, L) "
                  "or 3 (RGB)")
    for key, values in (("data.mean", d.mean), ("data.std", d.std)):
        if values is not None and len(values) != m.in_chans:
            raise bad(key, f"{list(values)} has {len(values)} numbers; valid: one per input channel "
                      f"(model.in_chans {m.in_chans})"[:300])
        if values is not None and not all(math.isfinite(v) and (v > 0 or key == "data.mean") for v in values):
            valid = "positive finite numbers (a zero std divides by zero)" if key == "data.std" else "finite numbers"
            raise bad(key, f"{list(values)}: valid: {valid}"[:300])


def _check_fewshot(cfg: RecipeCfg, bad: Bad) -> None:
    f = cfg.fewshot
    if not f.shots or any(k < 1 or k > 100_000 for k in f.shots):
        raise bad("fewshot.shots", f"each must be a whole number in [1, 100000], got {list(f.shots)}"[:200])
    if not f.l2_reg or any(r <= 0 for r in f.l2_reg):
        raise bad("fewshot.l2_reg", f"each must be > 0, got {list(f.l2_reg)}"[:200])
    _interval(bad, {"fewshot.seeds": f.seeds}, 1, MAX_SEEDS)
    names = [d.name for d in f.datasets]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise bad("fewshot.datasets", f"the name {dup!r} is given twice; name each data set once")


def _check_mpp(cfg: RecipeCfg, bad: Bad) -> None:
    """Masked patch prediction: fractions in range, and a target the patch size allows."""
    mpp = cfg.mpp
    _interval(bad, {"mpp.corrupt": mpp.corrupt}, 0, 1, lo_open=True)
    _interval(bad, {"mpp.bits": mpp.bits}, 1, 8)
    if mpp.mask < 0 or mpp.random < 0 or mpp.mask + mpp.random > 1.0:
        raise bad("mpp", f"mask and random must be >= 0 with mask + random <= 1 (the rest is kept), got "
                  f"mask={mpp.mask} random={mpp.random}")


def _check_names(cfg: RecipeCfg, bad: Bad) -> None:
    name = cfg.run.name
    raw = os.fsencode(name or "")  # a name from argv may hold bytes the locale could not decode (surrogates)
    if name is not None and (not name.strip() or "/" in name or name in (".", "..") or len(raw) > 128
                             or name != raw.decode("utf-8", "replace")):
        raise bad("run.name", f"{name[:60]!r} is not a usable name; valid: up to 128 bytes of UTF-8 text without '/', "
                  "e.g. 'cifar10-b16' (run.out chooses the folder)")
    paths = {"run.out": cfg.run.out, "data.source": cfg.data.source, "train.init_from": cfg.train.init_from,
             **{f"fewshot.datasets[{i}].source": d.source for i, d in enumerate(cfg.fewshot.datasets)}}
    for path, value in paths.items():
        raw = os.fsencode(value or "")
        if len(raw) > 4095 or any(len(part) > 255 for part in raw.split(b"/")):
            raise bad(path, f"{value[:60]!r}... is too long ({len(raw)} bytes; at most 255 a name, 4095 in all)")


def _check_model(cfg: RecipeCfg, bad: Bad, given: dict[str, str], origin: str) -> None:
    """Sizes within limits, then everything the model's build would refuse (`variants.buildable`)."""
    from vitcli.models.variants import buildable

    m = cfg.model
    for key, limit in _SIZES.items():
        _interval(bad, {f"model.{key}": getattr(m, key)}, 1, limit)
    _interval(bad, {"model.norm_eps": m.norm_eps}, 0, 0.1, lo_open=True)
    if max(m.res) > MAX_SIDE:
        raise bad("model.res", f"{m.res[0]}x{m.res[1]} is larger than {MAX_SIDE} pixels a side: one such image "
                  f"is {3 * m.res[0] * m.res[1] * 4 / 1e9:.3g} GB as float32 and its activations cannot fit in memory")
    try:
        variant, (h, w) = buildable(m)
    except VitError as exc:
        field, _, why = str(exc).partition(": ")
        if field.startswith("model.posemb"):  # the kind and place of the table, whoever gave them
            raise bad(field, why) from None
        raise RecipeError(f"{given.get(field) or given.get('model.res') or origin}: {exc}") from None
    if h * w > MAX_TOKENS:
        gigabytes = 3 * m.res[0] * m.res[1] * 4 / 1e9
        raise bad("model.res", f"{m.res[0]}x{m.res[1]} at patch {variant.patch} is {h * w} patches per image, more "
                  f"than the {MAX_TOKENS} vit allows: the activations cannot fit in memory (the input image alone "
                  f"is {gigabytes:.3g} GB as float32)")
    _check_sizes(cfg, variant, bad)
    _check_freeze(cfg, variant.depth, bad)


def _check_freeze(cfg: RecipeCfg, depth: int, bad: Bad) -> None:
    """Each train.freeze pattern names parameters the model will have, and a block range lies within it."""
    from vitcli.models.variants import parameter_roots

    roots = parameter_roots(cfg.model, head=cfg.train.objective == "supervised",
                            masked=cfg.train.objective == "masked_patch")
    for pattern in cfg.train.freeze:
        if pattern.split(".")[0] not in roots:
            raise bad("train.freeze", f"'{pattern}' matches no parameter; valid prefixes: {', '.join(roots)} or a "
                      "block range such as 'blocks.0-5'")
        match = _RANGE.fullmatch(pattern)
        if match is None:
            continue
        lo, hi = int(match.group(2)), int(match.group(3))
        top = depth - 1 if match.group(1) == "blocks" else 10_000
        if lo > hi or hi > top:
            raise bad("train.freeze", f"range {pattern!r} is not within 0-{top}"
                      f"{' (the model has ' + str(depth) + ' blocks)' if match.group(1) == 'blocks' else ''}")


def _check_sizes(cfg: RecipeCfg, variant, bad: Bad) -> None:
    """Sizes a setting multiplies: the masked-patch head's classes, relative-position tables, batches."""
    from vitcli.models.variants import block_bytes, grid, mpp_outputs

    m, mpp = cfg.model, cfg.mpp
    _check_weights(cfg, variant, bad)
    outputs = mpp_outputs(mpp.target, variant.patch, mpp.bits)
    if cfg.train.objective == "masked_patch" and outputs > MAX_CLASSES:
        h, w = grid(variant, m.res)
        masked = max(1, round(h * w * mpp.corrupt))
        what = {"pixels": f"at patch {variant.patch} is 3 x {variant.patch}^2 pixel values"}.get(
            mpp.target, f"with bits {mpp.bits} is {'16 cells x ' if mpp.target == 'color_4x4' else ''}2^(3 x "
                        f"{mpp.bits}) colour classes")
        fits = [b for b in range(1, 9) if mpp_outputs(mpp.target, variant.patch, b) <= MAX_CLASSES]
        valid = f"valid: bits 1-{fits[-1]} for {mpp.target}" if fits else "use a smaller patch"
        raise bad("mpp.bits" if mpp.target != "pixels" else "mpp.target",
                  f"{mpp.target} {what} = {outputs} outputs per patch, more than the "
                  f"{MAX_CLASSES} classes a head may have (as data.num_classes; the logits of one image's masked "
                  f"patches alone would be {_gb(4 * outputs * masked)}); {valid}")
    per_block, relative = block_bytes(variant, m.res, m.posemb, m.pool == "token")
    if relative * variant.depth > MAX_IMAGE_BYTES:
        raise bad("model.posemb", f"{m.posemb} at {m.res[0]}x{m.res[1]} (patch {variant.patch}) needs "
                  f"{_gb(relative * variant.depth)} of relative-position logits per image over {variant.depth} "
                  f"blocks, more than the {_gb(MAX_IMAGE_BYTES)} vit allows; use learned, learned_2d or sincos2d, "
                  "a lower model.res or a larger patch")
    for path, batch in {"train.micro_batch": cfg.train.micro_batch, "eval.batch_size": cfg.eval.batch_size,
                        "fewshot.batch_size": cfg.fewshot.batch_size}.items():
        if batch is not None and batch * per_block > MAX_BATCH_BYTES:
            raise bad(path, f"{batch} images at {m.res[0]}x{m.res[1]} need {_gb(batch * per_block)} of activations "
                      f"in each block ({_gb(per_block)} an image), more than the {_gb(MAX_BATCH_BYTES)} vit allows; "
                      f"valid: at most {MAX_BATCH_BYTES // per_block}")


def _check_weights(cfg: RecipeCfg, variant, bad: Bad) -> None:
    """The weights the width, depth, MLP and head (data.num_classes, when given) multiply must fit in memory."""
    from vitcli.models.variants import count_params

    m, classes = cfg.model, cfg.data.num_classes or 0
    args = dict(res=m.res, pool=m.pool, representation_size=m.representation_size, in_chans=m.in_chans)
    total = count_params(variant, classes, **args)
    head = total - count_params(variant, 0, **args)
    if 4 * total > MAX_WEIGHT_BYTES:
        path = "data.num_classes" if 2 * head > total else "model.width"
        classes_given = f" with {classes} classes" if classes else ""
        head_part = f" (the head {_gb(4 * head)})" if head else ""
        raise bad(path, f"{variant.name}{classes_given} has {si(total)} parameters, {_gb(4 * total)} as float32"
                  f"{head_part}, more than the {_gb(MAX_WEIGHT_BYTES)} vit allows; use a smaller width, depth or "
                  "mlp_dim, or fewer classes")


def _gb(size: int) -> str:
    return si(size, "B")


def _divisors(n: int) -> list[int]:
    found = []
    for d in range(1, min(n, 1 << 20) + 1):
        if n % d == 0:
            found.append(d)
            if len(found) == 12:
                break
    return found
