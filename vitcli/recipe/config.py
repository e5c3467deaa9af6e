"""Typed, frozen configuration: what a recipe means once it has been parsed and checked.

A recipe file is YAML; `recipe.py` turns it into a `RecipeCfg` exactly once. Everything downstream
(engine, models, data) reads these objects and never YAML, argv or the environment. Fields that hold
several values are tuples so a config is immutable and hashable. Field comments are the reference
documentation of every recipe key (`vit recipe show` prints them resolved).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Res = tuple[int, int]
AUTO = "auto"  # a split expression chosen from the data source's own split names (see DataCfg)


@dataclass(frozen=True, kw_only=True)
class ModelCfg:
    """Which ViT to build and how its head looks."""

    name: str = "Ti/16"  # paper name ("B/16", "R50+B/16") or timm name ("vit_base_patch16_224")
    res: Res = (224, 224)  # input resolution; "384", 384 or "384x256" in a recipe
    pool: Literal["token", "gap"] = "token"  # class token or global average pooling
    representation_size: int | None = None  # width of the paper's tanh pre-logits layer (pretraining)
    head_init: Literal["default", "zero"] = "default"  # "zero": the paper's fine-tuning head
    head_bias: float = 0.0  # initial head bias when head_init is "zero"
    dropout: float = 0.0  # dropout after the position embedding and inside MLP/projection layers
    attn_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth rate
    # Position embedding (paper App. D.4): learned 1-D table (timm's), none, learned_2d (row and column
    # tables of width/2, concatenated), relative (learned offsets along the patch sequence, as a bias
    # of each attention), relative_2d (row/column offsets), sincos2d (fixed sine-cosine).
    posemb: Literal["learned", "none", "learned_2d", "relative", "relative_2d", "sincos2d"] = "learned"
    # Where the table is added (paper Table 8): stem (once, after the patch embedding), every_layer (a
    # table per block, added to its input), every_layer_shared (the one table added before every block).
    # The two layer rows exist for the learned tables only (learned, learned_2d), as in the paper.
    posemb_where: Literal["stem", "every_layer", "every_layer_shared"] = "stem"
    # paper: linear zoom, corners aligned; bilinear/bicubic: as timm's checkpoint loading (antialiased)
    posemb_resample: Literal["paper", "bilinear", "bicubic"] = "paper"
    # LayerNorm epsilon of every norm of the transformer: the paper's and timm's 1e-6. A checkpoint that
    # records another keeps it (a transformers ViT's layer_norm_eps, e.g. 1e-12), so it computes what it did.
    norm_eps: float = 1e-6
    # Overrides to build a variant outside the zoo (tiny models for CPU recipes and tests).
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_dim: int | None = None
    patch: int | None = None
    # Input channels (timm's name): 3 reads images as RGB, 1 as grayscale (PIL's "L"); read from a
    # checkpoint's patch embedding.
    in_chans: int = 3
    # Parts of the other ViTs timm builds (timm's names), read from a checkpoint's keys; off in the paper's
    # ViT. fc_norm: GAP with the norm after pooling (MAE); init_values: layer scale's initial value
    # (DeiT III, CaiT); reg_tokens: register tokens after the class token; no_embed_class: the position
    # table covers the patches only; distilled: DeiT's distillation token and second head (the output
    # is the mean of both heads).
    fc_norm: bool = False
    init_values: float | None = None
    reg_tokens: int = 0
    no_embed_class: bool = False
    distilled: bool = False


@dataclass(frozen=True, kw_only=True)
class DataCfg:
    """Where images come from and how they are turned into tensors."""

    # Hub id, local parquet/arrow dir, "imagefolder:PATH" or "builtin:digits". Required to train; empty in
    # fine-tuning recipes that take the data set of the checkpoint they start from.
    source: str = ""
    # Split expressions, e.g. "train[:98%]" and "train[98%:]" (the paper's minival). "auto": chosen from the
    # source's own split names (train: "train", plus "validation" when "test" is held out; eval: "test",
    # else "validation", else a single split for vit eval); commands use it for a source other than the
    # checkpoint's. eval_split null: no evaluation.
    train_split: str = "train"
    eval_split: str | None = "test"
    image_column: str | None = None  # detected when null: img, image, or WebDataset's jpg, jpeg, png, webp
    label_column: str | None = None  # detected when null: label, labels, fine_label, or WebDataset's cls
    num_classes: int | None = None  # from the dataset's ClassLabel when null
    streaming: bool = False  # iterate without preparing the whole dataset (ImageNet-21k)
    # Streamed training: examples each DataLoader worker holds to shuffle within a shard (0: shard order);
    # the buffer never mixes two shards, so a resumed stream continues exactly (vitcli/data/stream.py).
    # Undecoded ImageNet images are about 110 kB: 2,000 of them are about 220 MB per worker.
    shuffle_buffer: int = 2000
    norm: Literal["paper", "imagenet"] = "paper"  # paper: pixels to [-1, 1]; imagenet: mean/std
    # Per-channel mean and std of pixels in [0, 1] (one number per model.in_chans), e.g. [0.1307] and
    # [0.3081] for MNIST; when given they replace data.norm's constants. Read from a timm pretrained_cfg
    # or a transformers preprocessor_config.json when the checkpoint has one.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    train_crop: Literal["inception", "resize"] = "inception"  # random resized crop, or plain resize
    min_area: float = 0.05  # smallest crop area of the inception crop
    flip: bool = True  # random horizontal flip when training
    eval_crop: float = 1.0  # eval: resize to res/eval_crop, then centre-crop res
    randaugment: str | None = None  # timm RandAugment spec, e.g. "rand-m9-mstd0.5"
    mixup: float = 0.0  # mixup alpha (0: off)
    cutmix: float = 0.0  # cutmix alpha (0: off)
    workers: int | None = None  # DataLoader worker processes; null: chosen from the CPU count
    # Where JPEGs are decoded (others always on the CPU): cpu: in the loader's worker processes
    # (libjpeg-turbo, at 1/2-1/8 size where the output allows); gpu: on the run's CUDA device, a batch at a
    # time (nvJPEG via torchvision), the workers only drawing the crops; auto: gpu when the run is on CUDA
    # (and no RandAugment, which is PIL-only), else cpu. gpu on a run that is not on CUDA is refused.
    decode: Literal["auto", "cpu", "gpu"] = "auto"
    # undecodable images skipped (and counted) up to this fraction of an epoch's examples; the run stops as
    # soon as the count passes it (a stream, whose epoch is unknown: judged after 100 images)
    max_bad_fraction: float = 0.001


# data.norm -> per-channel (mean, std) of pixels in [0, 1]: "paper" is the ViT paper's [-1, 1] (timm's
# Inception constants), "imagenet" timm's ImageNet defaults.
NORMS = {"paper": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
         "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def norm_stats(norm: str, mean, std, channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """THE normalisation rule: data.mean / data.std when given, else data.norm's constants (for one
    channel, their average: the grey of the three). Every reader of pixels and every export uses it."""
    base_mean, base_std = NORMS[norm]
    if channels == 1:
        base_mean, base_std = (sum(base_mean) / 3,), (sum(base_std) / 3,)
    return tuple(mean or base_mean), tuple(std or base_std)


@dataclass(frozen=True, kw_only=True)
class OptimCfg:
    """Optimiser. A list of learning rates is a sweep (fine-tuning protocol of the paper)."""

    name: Literal["adam", "adamw", "sgd"] = "adam"  # adam/adamw: decoupled weight decay
    lr: float | tuple[float, ...] = 1e-3  # peak learning rate, or several for a sweep
    weight_decay: float = 0.0  # never applied to biases, norms, position embeddings, class token
    b1: float = 0.9
    b2: float = 0.999
    momentum: float = 0.9  # SGD only
    clip_norm: float | None = 1.0  # global gradient-norm clipping; null: off
    layer_decay: float | None = None  # layer-wise lr decay for fine-tuning; null: off


@dataclass(frozen=True, kw_only=True)
class ScheduleCfg:
    """Learning-rate schedule: linear warmup, then decay to `end_lr`."""

    warmup_steps: int = 0
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    end_lr: float = 0.0


@dataclass(frozen=True, kw_only=True)
class EarlyStopCfg:
    """Stop training when an evaluation metric has not improved for `patience` evaluations (eval.every)."""

    metric: str | None = None  # e.g. top1 (higher is better) or loss (lower is better); null: never stop early
    patience: int = 5  # evaluations without an improvement of more than min_delta
    min_delta: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TrainCfg:
    """How long and how to train. Give exactly one of steps, epochs or examples."""

    batch_size: int = 512  # global batch (all processes, after gradient accumulation)
    micro_batch: int | None = None  # per-step batch that fits memory; null: chosen automatically
    steps: int | None = None
    epochs: float | None = None
    examples: int | None = None
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast on CPU and CUDA
    compile: bool = False  # torch.compile the model
    ema: float | None = None  # Polyak/EMA decay (paper: 0.9999); null: off
    seed: int = 0
    label_smoothing: float = 0.0
    log_every: int = 50
    checkpoint_every: int = 1000  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # older checkpoints are pruned after a new one is in place
    init_from: str | None = None  # checkpoint to start from (fine-tuning); its head is not loaded
    freeze: tuple[str, ...] = ()  # parameter-name prefixes or ranges: "patch_embed", "blocks.0-5"
    skip_nonfinite: int = 0  # steps with a NaN/inf loss that may be skipped before stopping
    # What the model learns: class labels, or the paper's self-supervised masked patch prediction (the
    # `mpp` section; labels unused, the model has no classification head).
    objective: Literal["supervised", "masked_patch"] = "supervised"
    parallel: Literal["ddp", "fsdp"] = "ddp"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Recompute each block's activations during the backward pass (timm's set_grad_checkpointing): the
    # activation memory of one block instead of all of them, for about a third more compute per step
    # (benchmarks/memory.py); what makes L/16 and H/14 fit a GPU's memory at a useful micro-batch.
    grad_checkpointing: bool = False
    # Keep the weights of the best evaluation so far in <run>/best/ (model, config.json, results.json), by
    # an eval metric: top1, top5 or loss (lower is better), ema_ for the EMA weights' (e.g. ema_top1).
    # Needs evaluations during training (eval.every). `vit eval --from RUN --weights best` reads it.
    keep_best: str | None = None
    early_stop: EarlyStopCfg = field(default_factory=EarlyStopCfg)
    # Under torchrun: seconds any collective waits for the other processes before this one gives up with
    # one line naming the step (a rank that fails outright ends the others at once, whatever this says).
    timeout: float = 600.0


@dataclass(frozen=True, kw_only=True)
class MaskedPatchCfg:
    """Masked patch prediction (train.objective: masked_patch), paper Section 4.6 and Appendix B.1.2."""

    corrupt: float = 0.5  # fraction of each image's patches that are corrupted (and predicted)
    mask: float = 0.8  # of the corrupted: replaced by the learnable [mask] embedding
    random: float = 0.1  # of the corrupted: replaced by a random other patch's embedding (the rest: kept)
    # mean_color: the patch's mean colour in `bits` per channel (512 classes); color_4x4: the patch
    # downsized to 4x4 in `bits` colour (16 predictions of 512 classes); pixels: L2 on normalised pixels.
    target: Literal["mean_color", "color_4x4", "pixels"] = "mean_color"
    bits: int = 3


@dataclass(frozen=True, kw_only=True)
class EvalCfg:
    """Evaluation on `data.eval_split`, during training and by `vit eval`."""

    every: int = 0  # steps between evaluations during training (0: only at the end)
    batch_size: int = 256
    evaluators: tuple[Literal["classification", "fewshot"], ...] = ("classification",)
    weights: Literal["ema", "raw"] = "ema"  # ema when the checkpoint has them


@dataclass(frozen=True, kw_only=True)
class FewshotDataCfg:
    """One data set of the few-shot linear evaluation."""

    name: str
    source: str
    train_split: str = "train"
    test_split: str = "test"
    image_column: str | None = None
    label_column: str | None = None


@dataclass(frozen=True, kw_only=True)
class FewshotCfg:
    """The paper's few-shot linear evaluation on frozen pre-logits features."""

    shots: tuple[int, ...] = (1, 5, 10, 25)
    seeds: int = 3
    l2_reg: tuple[float, ...] = (1024.0,)  # regulariser(s) of the closed-form solve (paper: 2^10)
    datasets: tuple[FewshotDataCfg, ...] = ()  # empty: the recipe's own data (train/eval splits)
    batch_size: int = 256


@dataclass(frozen=True, kw_only=True)
class SweepCfg:
    """The paper's lr sweep (a list in optim.lr): choose on a minival carved from train, then retrain."""

    # Fraction of data.train_split held out to choose the lr, a whole percent (0.02 = the last 2%);
    # null: the paper's value for its data sets (10% Pets and Flowers, 2% CIFAR, 1% ImageNet), else 2%.
    minival: float | None = None
    # Retrain the chosen lr on the whole train split and report it on data.eval_split (the paper's
    # final results); false keeps the minival winner, cheaper but not the paper's protocol.
    retrain: bool = True


@dataclass(frozen=True, kw_only=True)
class RunCfg:
    """Naming of the run directory."""

    name: str | None = None  # default: the recipe file's name
    out: str | None = None  # default: runs/<name>, or runs/<name>-2, -3, ... when taken
    # Experiment trackers (Hugging Face's name): tensorboard event files (default), an MLflow run (local
    # store in <run>/mlruns unless MLFLOW_TRACKING_URI says where), a W&B run (offline unless WANDB_MODE).
    report_to: tuple[Literal["tensorboard", "mlflow", "wandb"], ...] = ("tensorboard",)


@dataclass(frozen=True, kw_only=True)
class RecipeCfg:
    """A whole recipe."""

    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    mpp: MaskedPatchCfg = field(default_factory=MaskedPatchCfg)
    fewshot: FewshotCfg = field(default_factory=FewshotCfg)
    sweep: SweepCfg = field(default_factory=SweepCfg)
    run: RunCfg = field(default_factory=RunCfg)

