"""The bad-input catalogue, kept in one place: the CASES of `tests/test_bad_inputs.py` (every one exit code 2)
and of `tests/test_bad_inputs_io.py` (images, streams, output paths: some end in 0 or 1), plus the rows below.

docs/bad-inputs.md (the whole table) and README.md (a selection) are generated from it between
`<!-- bad-inputs:begin -->` and `<!-- bad-inputs:end -->`; `test_docs_match_the_cases` fails when either
is out of date. Regenerate both with:

    python tests/catalogue.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"

# What each case of CASES is, as the table of docs/bad-inputs.md names it (see tests/catalogue.py).
INPUTS = {
    'yaml-syntax': 'Recipe with a YAML syntax error',
    'recipe-not-mapping': 'Recipe that is a list, not a mapping',
    'unknown-key': 'Unknown key (`train.batch_sise`)',
    'wrong-type': 'Wrong type (`train.batch_size: lots`)',
    'missing-required-field': 'Missing required field (few-shot data set without `source`)',
    'missing-data-source': 'No `data.source` to train on',
    'pretrain-without-data': '`vit pretrain` with neither a RECIPE nor `--data`',
    'steps-and-epochs-options': '`--steps` and `--epochs` together',
    'base-cycle': '`base:` cycle (a.yaml -> b.yaml -> a.yaml)',
    'yaml-duplicate-key': 'Duplicate key in a section',
    'yaml-duplicate-section': 'Duplicate section',
    'yaml-alias-bomb': 'YAML alias (a few hundred bytes could expand to gigabytes)',
    'yaml-nested-too-deep': 'YAML nested thousands deep',
    'set-nested-too-deep': '`--set` value nested thousands deep',
    'set-value-not-finite': 'Non-finite number (`--set optim.lr=.nan`)',
    'set-value-out-of-range': 'Out-of-range `--set` (`optim.b1=1`)',
    'res-too-large-for-memory': 'Resolution whose activations cannot fit in memory (100000 px)',
    'freeze-range-too-large': "`train.freeze` range beyond the model's blocks",
    'posemb-where-without-a-table': '`model.posemb_where: every_layer` for a kind without a learned table',
    'run-name-too-long': '300-character `run.name`',
    'out-path-too-long': '`--out` with a 300-character name',
    'missing-recipe': 'Recipe file that does not exist',
    'recipe-is-directory': 'Recipe path that is a directory',
    'recipe-check-empty-directory': '`vit recipe check` of a directory without recipes',
    'class-names-differ': "Data whose class names are not the head's (`cat`, `dog` on a colour head)",
    'head-width-no-names': 'A head of another width with no class names (8 outputs, 4 named classes)',
    'fewshot-folder-one-split': 'Few-shot on an image folder with one split',
    'predict-nothing': '`vit predict` on nothing readable',
    'set-not-numeric': 'Non-numeric `--set` for a number (`optim.lr=fast`)',
    'set-unknown-key': '`--set` of an unknown key',
    'set-no-equals': '`--set` without `=`',
    'unknown-variant': 'Unknown model variant (`B16`)',
    'res-not-divisible': 'Resolution not divisible by the patch (18 px, patch 4)',
    'posemb-width': 'A width the position embedding cannot split (`sincos2d` at width 34)',
    'mlp-dim-not-a-ratio': "An MLP width timm cannot express as a ratio of the width (61 at width 7)",
    'freeze-no-parameter': '`train.freeze` naming no parameter of the model (`blockz`)',
    'steps-and-epochs': 'Both `train.steps` and `train.epochs`',
    'micro-batch-not-divisor': '`micro_batch` that does not divide the batch',
    'source-missing-path': 'Local data path that does not exist',
    'source-hub-offline': 'Hub id while the hub is unreachable (fails in seconds)',
    'source-is-a-script': 'Data set that is a loading script (never run)',
    'builtin-unknown': 'Unknown builtin source',
    'split-unknown': 'Split that does not exist',
    'split-empty': 'Split expression that selects nothing',
    'image-column-missing': 'Named image column missing',
    'no-image-column': 'No image column at all',
    'label-column-missing': 'Named label column missing',
    'labels-not-integers': 'Labels that are text',
    'label-out-of-range': 'Label out of range (5 with `num_classes: 4`)',
    'num-classes-too-small': "`num_classes` below the data's classes",
    'images-all-corrupt': 'Every image corrupt',
    'label-null': 'Null label in a parquet data set',
    'image-null': 'Null image in a parquet data set',
    'label-huge': 'One label of 2e9 (would build a 2e9-class head)',
    'imagefolder-whole-tree': '`imagefolder:` pointed at a whole tree (a home directory): refused before any scan',
    'imagefolder-name-not-utf8': '`imagefolder:` with a class folder named in Latin-1 (`r\\xe9d`; pyarrow raised '
                                 'UnicodeEncodeError)',
    'imagefolder-split-and-class-folders': '`imagefolder:` with class folders beside split folders',
    'imagefolder-unused-image': '`imagefolder:` with an image beside its class folders (it would be used by no class)',
    'images-corrupt-small-set': 'One corrupt image in a data set of 32 (`max_bad_fraction` on small sets)',
    'parquet-truncated': 'Truncated parquet file',
    'parquet-corrupt': 'Parquet file with scrambled pages',
    'parquet-no-rows': 'Parquet file with no rows',
    'tar-truncated': 'WebDataset tar shard cut short (streamed)',
    'tar-example-without-label': 'WebDataset example with no `.cls` file, met while streaming',
    'shards-none': 'Streamed `data.source` folder with no shards in it',
    'batch-larger-than-data': 'Batch larger than the data set',
    'out-holds-another-run': '`--out` holding another run',
    'out-under-a-file': '`--out` under a regular file',
    'out-is-a-file': '`--out` that is a file',
    'out-read-only-fs': '`--out` on a read-only file system (fails for root too)',
    'resume-not-a-run': '`--resume` on a folder with no run',
    'resume-other-recipe': '`--resume` with another recipe',
    'resume-recipe-json-torn': '`--resume` of a run whose recipe.json is torn',
    'out-locked-by-another-run': 'Second `vit pretrain` on an `--out` another one is writing',
    'resume-fewer-steps': '`--resume` with fewer steps than already done',
    'resume-planted-link': '`--resume` of a run with a planted symbolic link (`metrics.jsonl`)',
    'export-run-config-json-planted-link': '`vit export` of a run whose config.json is a planted symbolic link',
    'device-cuda-without-gpu': '`--set train.device=cuda` without a GPU',
    'disk-full': 'Disk full while writing a checkpoint',
    'from-missing': '`--from` path that does not exist',
    'from-unknown-format': '`--from` file of an unknown format',
    'from-empty-dir': '`--from` folder with no weights',
    'npz-missing-array': 'Google `.npz` missing an array',
    'npz-unknown-layout': '`.npz` of another layout (not a ViT)',
    'npz-object-array': '`.npz` holding an object array (a pickle)',
    'npz-header-huge-shape': '`.npz` member whose header declares 10^12 values',
    'npz-zip-bomb': '`.npz` member that inflates to 256 MB (a zip bomb)',
    'npz-header-malformed': '`.npz` member with a malformed `.npy` header',
    'npz-shape-does-not-fit': '`.npz` whose position embeddings do not fit its width',
    'npz-single-npy': '`.npy` array saved under an `.npz` name',
    'hf-other-model-type': 'Hugging Face folder of another model type',
    'hub-name-offline': 'Hub name while the hub is unreachable (fails in seconds)',
    'hub-name-malformed': 'Malformed hub name',
    'ckpt-truncated': 'Truncated checkpoint',
    'ckpt-not-state-dict': 'Checkpoint that is not a state dict',
    'ckpt-runs-code': 'Checkpoint pickle that would run code (it is not run)',
    'ckpt-runs-code-protocol-2': 'Code-running pickle of protocol 2',
    'ckpt-runs-code-in-torch-zip': 'Code-running pickle inside a torch.save zip',
    'from-fifo': '`--from` a FIFO (would block forever)',
    'ckpt-integer-weights': 'Checkpoint with integer weights',
    'ckpt-other-variant': "Checkpoint of another variant than the recipe's (eval)",
    'init-from-other-variant': '`train.init_from` of another variant',
    'safetensors-wrong-shapes': 'safetensors with wrong shapes',
    'config-json-wrong-type': 'config.json field of the wrong type (`vit_model.patch: "x"`)',
    'export-stored-norm-unknown': "`vit export` of a run whose config.json's stored recipe says `data.norm: weird`",
    'export-stored-std-zero': "`vit export --format hf` of a run whose stored recipe says `data.std: [0, 0, 0]`",
    'export-described-res-huge': "`vit export` of a run whose config.json says `vit_model.res: 168508` (a 227 GB "
                                 "model was built)",
    'config-json-invalid': 'Run directory with a broken config.json',
    'data-mean-wrong-length': '`data.mean` with another length than the input channels',
    'data-std-zero': '`data.std` with a zero',
    'data-decode-gpu-randaugment': '`data.decode: gpu` with RandAugment (PIL-only)',
    'data-decode-gpu-without-gpu': '`data.decode: gpu` on a machine without CUDA',
    'ckpt-four-channels': 'Checkpoint whose patch embedding reads 4 channels (images give 1 or 3)',
    'ckpt-wrapper-no-tensors': 'Lightning-style checkpoint whose `state_dict` holds no tensors',
    'ckpt-unknown-key-layout': 'State dict of no ViT layout (a CNN): its first keys are listed',
    'hf-config-number-as-text': 'transformers config.json with a number as text (`num_hidden_layers: "12"`)',
    'hf-config-hidden-size-zero': 'transformers config.json with `hidden_size: 0`',
    'hf-config-patch-size-text': 'transformers config.json with `patch_size: "16"` (once read as 1)',
    'hf-config-id2label-keys': 'transformers `id2label` whose keys are not class indices',
    'hf-preprocessor-mean-scalar': 'preprocessor_config.json with `image_mean: 0.5` (not a list)',
    'timm-config-heads-text': 'timm config.json with `model_args.num_heads: "6"`',
    'timm-config-args-list': 'timm config.json whose `model_args` is a list',
    'timm-config-input-size': 'timm config.json with `pretrained_cfg.input_size: 224`',
    'shots-larger-than-class': '`--shots` larger than a class',
    'weights-unknown': '`--weights` other than ema/raw/best',
    'weights-best-not-kept': '`--weights best` of a run that kept no best/',
    'res-option-bad': '`--res big`',
    'finetune-res-option-bad': '`vit finetune --res 17` (not divisible by the patch)',
    'shots-option-bad': '`--shots 0`',
    'bench-steps-zero': '`vit bench --steps 0`',
    'bench-batch-negative': '`vit bench --batch -4`',
    'mpp-bits-head-too-wide': '`mpp.bits: 8` (a 2^24-class masked-patch head)',
    'mpp-color-4x4-bits-too-many': '`mpp.target: color_4x4` with `mpp.bits: 6` (16 x 2^18 outputs per patch)',
    'mpp-pixels-patch-too-large': '`mpp.target: pixels` at patch 1024 (3 x 1024^2 outputs per patch)',
    'posemb-relative-high-res': '`model.posemb: relative` at 1024 px (a 65537 x 131074 offset-logit table per head)',
    'posemb-relative-2d-high-res': '`model.posemb: relative_2d` at 512 px',
    'eval-batch-too-large-for-memory': '`eval.batch_size: 65536` at 1024 px',
    'micro-batch-too-large-for-memory': '`train.micro_batch: 8192` at 1024 px',
    'predict-top-k-zero': '`vit predict --top-k 0`',
    'predict-batch-huge': '`vit predict --batch 99999999999999999999`',
    'predict-batch-too-large-for-memory': '`vit predict --batch 65536 --res 1024`',
    'inspect-samples-huge': '`vit inspect --samples 99999999999999999999`',
    'head-weights-too-large': '`data.num_classes: 1000000` on a width of 8192 (a 33 GB head)',
    'model-weights-too-large': 'A width of 4096 and a depth of 256 (51.6 G parameters)',
    'inspect-res-tables-too-large': '`vit inspect --res 1024` at patch 4 (65536 x 65536 attention and similarity tables)',
    'eval-crop-too-small': '`--set data.eval_crop=0.0001` (images resized to 160000 px a side: MemoryError)',
    'bench-res-option': '`vit bench --res 8192`',
    'resume-finished-results-json-damaged': '`--resume` of a finished run whose last checkpoint is gone and whose '
                                            'results.json is damaged (`"steps": "2"`)',
    'resume-finished-checkpoints-gone': '`--resume` of a finished run whose checkpoints/ is gone',
    'resume-finished-checkpoints-emptied': '`--resume` of a finished run whose checkpoint files were deleted',
    'resume-finished-older-checkpoint': '`--resume` of a finished run whose last checkpoint was deleted',
    'resume-finished-checkpoints-unreadable': '`--resume` of a finished run whose checkpoints are all unreadable',
    'resume-checkpoint-weight-missing': '`--resume` from a checkpoint missing a weight (`norm.weight`; torch kept '
                                        'the fresh one)',
    'resume-checkpoint-optimizer-state-stray': '`--resume` from a checkpoint whose optimiser state names no parameter '
                                               'of the model (failed at the next checkpoint, mid-run)',
    'resume-finished-model-only': '`--resume` of a run with model.safetensors but no results.json or checkpoints',
    'predict-empty-input': '`vit predict` with an empty INPUT (`""`, which would mean the current folder)',
    'predict-blank-input-among-files': '`vit predict` with a blank INPUT beside an image',
    'sweep-minival-one-image': 'lr sweep whose minival holds one image',
    'sweep-minival-fewer-than-classes': 'lr sweep whose minival (the 2% default of 96 images) holds 2 images',
    'split-class-names-reordered': "Parquet splits naming the same classes in another order (`datasets` would read "
                                   "one split's labels by the other's names)",
    'split-class-names-differ': 'Parquet splits naming different classes',
    'image-folder-9-percent-unreadable': 'Image folder with 3 of 32 training images unreadable, a 2-step run',
    'recipe-yaml-hand-edited': "`--resume` of a run whose recipe.yaml was edited by hand (`optim.lr`)",
    'sweep-lr-same-folder': 'lr sweep over 0.001 and 0.0010000001 (one folder `lr-0.001` for both; `[0.001, '
                            '0.001]` trained once and "tied with itself")',
    'data-source-home-folder': 'A home folder (no data files, hidden caches) as a plain `data.source` path',
    'inspect-samples-zero': '`vit inspect --samples 0`',
    'fewshot-seeds-too-many': '`vit fewshot --seeds 1001`',
    'option-unknown': 'An option the command does not have (`vit eval --top-k`)',
    # tests/test_bad_inputs_io.py
    'tensorboard-planted-link': 'Links planted in a run directory under the names TensorBoard would use next',
    'csv-formula-injection': "`vit predict --csv` of class and file names such as `=HYPERLINK(...)`, `+cmd|...`, "
                             "`@SUM(...)`, `-2+3.png`",
    'inspect-image-bomb': '`vit inspect --images` of a decompression bomb (20000x20000 PNG of 120 KB)',
    'inspect-image-strip': '`vit inspect --images` of a 1 x 30,000,000 PNG (under the pixel limit)',
    'predict-image-strip': '`vit predict` of a 1 x 30,000,000 PNG',
    'predict-image-bomb': '`vit predict` of a 9000x9000 PNG (81 megapixels)',
    'predict-image-aspect': '`vit predict` of a 20000x100 PNG (aspect ratio 200:1)',
    'inspect-images-fifo': '`vit inspect --images` a FIFO (would block forever)',
    'predict-fifo': '`vit predict` of a FIFO',
    'predict-eps-as-png': '`vit predict` of an EPS file named .png (Ghostscript would run)',
    'inspect-exif-rational-orientation': 'TIFF whose EXIF orientation is a rational (6/1)',
    'predict-exif-orientation-junk': 'EXIF orientation 13/2, or text',
    'train-image-strip': 'Training data holding a 1 x 30,000,000 PNG',
    'train-image-bomb': 'Training data holding a decompression bomb',
    'stream-unlabelled-image-bomb': 'Streamed unlabelled data (masked-patch pretraining) holding a decompression '
                                    'bomb (datasets decoded it, unbounded, before vit\'s decoder; any unlabelled '
                                    'stream was a TypeError)',
    'stdout-closed-pipe': '`vit models | head -c 1` (stdout closed early)',
    'stdout-closed-pipe-json': '`vit recipe show demo | head -c 1`',
    'stdout-full': '`vit models > /dev/full`',
    'stdout-full-yaml': '`vit recipe show demo > /dev/full`',
    'stdout-closed-at-start': '`vit models >&-` (started with stdout closed)',
    'stderr-full': '`vit recipe check demo 2> /dev/full`',
    'names-non-utf8-locale': 'File names that are not UTF-8, printed under `LC_ALL=C PYTHONUTF8=0`',
    'run-name-bytes-of-another-locale': '`--set run.name=café` typed in UTF-8 under `LC_ALL=C PYTHONUTF8=0` (was a '
                                        'UnicodeEncodeError)',
    'tensorboard-disk-full': 'Disk full while writing the TensorBoard event file',
    'predict-file-name-terminal-escapes': 'A file name holding terminal escape sequences (clear the screen, retitle '
                                          'the window) printed by `vit predict`',
    'eval-out-mathtext-class-names': '`vit eval --out` with class names `$\\undefinedcommand$`, `$x^2$`, `a$b`',
    'inspect-mathtext-names': '`vit inspect` of a run named `$\\bad$`, class `$\\sqrt{$`, image `$\\frac$.png`',
    'eval-out-dpi-beyond-figure-limit': '`vit eval --out --dpi 1200` (a 7200 x 7200 confusion matrix)',
    'predict-class-names-of-another-head': 'A checkpoint whose 5 class names do not fit its 4-output head',
    'eval-out-class-names-100000-characters': '`vit eval --out` with a class name of 100,000 characters (40 s to lay '
                                              'out)',
    'export-results-top1-not-an-accuracy': '`vit export` of a run whose results.json says `top1: 5` (the model card '
                                           'would publish 500%)',
    'inspect-image-named-in-latin-1': '`vit inspect --images` of an image named in Latin-1 (matplotlib raised '
                                      'TypeError on its title)',
    'eval-run-in-a-latin-1-folder': '`vit eval --from` a run whose folder is named in Latin-1 (read as "corrupt '
                                    'or truncated")',
    'finetune-from-a-latin-1-run': '`vit finetune --from` a run in a Latin-1 folder (run.name refused, then '
                                   'UnicodeEncodeError in the TensorBoard hyperparameters after step 1)',
    'export-out-named-in-latin-1': '`vit export --out` a folder named in Latin-1 (UnicodeEncodeError writing the '
                                   'model card)',
    'export-out-under-a-file': '`vit export --out` under a regular file',
    'export-out-too-long': '`vit export --out` with a 300-character name',
    'export-out-is-a-file': '`vit export --out` that is a file',
    'export-fails-midway': '`vit export` failing half-way (disk full at config.json)',
    'export-after-a-killed-export': '`vit export` after an earlier one to the same `--out` was killed (`kill -9`)',
    'csv-in-linked-home': '`--csv` in a home folder that is a symbolic link',
    'csv-to-dev-stdout': '`--csv /dev/stdout`',
    'csv-is-a-directory': '`--csv` naming a directory',
    'csv-under-a-file': '`--csv` under a regular file',
    'csv-to-fifo-nobody-reads': '`--csv` a FIFO that nobody reads (would block forever)',
    'inspect-out-linked-folder': '`vit inspect --out` a symbolic link to a folder',
    'export-out-in-linked-home': '`vit export --out` in a home folder that is a symbolic link',
    'metrics-integer-too-large': 'metrics.jsonl row holding an integer too large for a float (`vit inspect RUN`)',
    'metrics-junk-rows': 'metrics.jsonl rows that are lists, text steps, negative steps, binary, nested 100000 deep',
    'metrics-values-too-large': 'metrics.jsonl rows whose loss is 1.7e308 (an axis to it overflows)',
    'resume-metrics-nested-deep': '`--resume` of a run whose metrics.jsonl holds a line nested 100000 deep',
    'metrics-300000-rows': 'metrics.jsonl of 300,000 tiny rows (256 MiB of them would be ten million dicts)',
    'metrics-gigabyte-of-junk': 'metrics.jsonl that is a gigabyte of junk',
}

# Rows checked by other tests (signals and numerical faults in tests/test_crash.py, warnings in
# tests/test_bad_inputs.py): (input, the line, exit code).
EXTRA_ROWS = [
    ("NaN loss (`--set optim.lr=1e30 --set optim.clip_norm=null`)",
     "`non-finite loss or gradient at step 2 (loss nan, grad norm nan); last good checkpoint: "
     "<out>/checkpoints/step-00000001.pt; likely causes: a learning rate too high for this batch size, or bf16 "
     "overflow (try train.precision: fp32); train.skip_nonfinite: N skips up to N such steps`", "2"),
    ("Weights that turn NaN/inf at a checkpoint",
     "`step 3: weight pos_embed is NaN or infinite, so no checkpoint was written; last good checkpoint: "
     "<out>/checkpoints/step-00000002.pt; likely causes: a learning rate too high for this batch size, or bf16 "
     "overflow (try train.precision: fp32)`", "2"),
    ("SIGTERM (preemption) during training",
     "`stopped by SIGTERM after step 52; checkpoint saved: <out>/checkpoints/step-00000052.pt; resume with: vit "
     "pretrain <recipe> --resume --out <out>` (the hint repeats the run's `--set` and `--res`)", "143"),
    ("SIGTERM during the final evaluation",
     "`stopped by SIGTERM after step 2; checkpoint saved: <out>/checkpoints/step-00000002.pt; resume with: ...` "
     "(the resume evaluates once more; metrics.jsonl keeps one row per step)", "143"),
    ("Ctrl-C (SIGINT) during training",
     "`stopped by SIGINT after step 52; checkpoint saved: <out>/checkpoints/step-00000052.pt; resume with: vit "
     "pretrain <recipe> --resume --out <out>`", "130"),
    ("A few corrupt images (2 of 64, `max_bad_fraction: 0.05`)",
     "no error: two warning lines, `data.source '<data>' split 'train': skipping undecodable image, example 5: "
     "OSError: Truncated File Read` and `... 2 of 64 images skipped as undecodable (max_bad_fraction=0.05)`; "
     "training goes on", "0"),
    ("`vit predict --top-k 1000000000` (or any k beyond the head's classes)",
     "no error: each row and the `--csv` header hold every class once, best first (k is the head's width)", "0"),
    ("`vit export` / `vit eval` of a run whose config.json is gone",
     "no error: the heads and resolution come from the run's recipe.json, never guessed", "0"),
    ("`vit inspect --from` two different files both named model.safetensors, no `--out`",
     "no error: `inspect/<run>` (the run folder's name), or `inspect/<name>-2` when `inspect/<name>` holds another "
     "checkpoint's inspection; a new inspection removes the previous one's figures first", "0"),
    ("`checkpoints/latest` naming `../../x.pt`, an absolute path or binary junk",
     "no error: one warning line, `<out>/checkpoints/latest does not name a checkpoint file in "
     "<out>/checkpoints (...); using the highest-numbered step-*.pt instead` (tests/test_rundir.py)", "0"),
]

README_SELECTION = [
    "yaml-syntax", "unknown-key", "wrong-type", "missing-required-field", "base-cycle", "missing-recipe",
    "set-not-numeric", "set-value-out-of-range", "unknown-variant", "res-not-divisible", "yaml-duplicate-key",
    "source-missing-path", "source-hub-offline", "split-empty", "image-column-missing", "label-out-of-range",
    "images-all-corrupt", "parquet-truncated", "out-holds-another-run", "out-locked-by-another-run",
    "out-read-only-fs", "resume-planted-link", "disk-full", "from-missing", "ckpt-truncated", "ckpt-runs-code",
    "ckpt-other-variant", "safetensors-wrong-shapes", "shots-larger-than-class", "inspect-image-strip",
    "predict-fifo", "stdout-full", "export-out-under-a-file", "csv-formula-injection",
    "NaN loss (`--set optim.lr=1e30 --set optim.clip_norm=null`)", "SIGTERM (preemption) during training",
]


def _shown(expected: str) -> str:
    """A case's expected line as the docs show it: placeholders named, "<*>" (any text) as "…"."""
    text = expected.replace("{tmp}", "<tmp>").replace("{data}", "<data>").replace("{run}", "<run>")
    return "`" + text.replace("<*>", "…").replace("|", "\\|") + "`"


def _outcome(expected: str, code: int) -> str:
    """What the docs say a case ends in: the line it prints, or (exit code 0) what it shows, in words."""
    if code == 2 or expected.startswith(("unreadable: ", "warning: ")):
        return _shown(expected)
    return "no error: " + (expected.replace("|", "\\|") if expected else "nothing is printed")


def case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


def rows(cases) -> dict[str, str]:
    """Every catalogue row as a markdown table line, keyed by case id (or by input, for EXTRA_ROWS)."""
    out = {}
    for case in cases:
        case_id, _, expected, *rest = case.values if hasattr(case, "values") else case
        code = rest[0] if rest else 2
        label = INPUTS[case_id].replace("|", "\\|")
        out[case_id] = f"| {label} | {_outcome(expected, code)} | {code} |"
    for label, line, code in EXTRA_ROWS:
        out[label] = f"| {label} | {line} | {code} |"
    return out


def table(lines: list[str]) -> str:
    return "\n".join([BEGIN, "| Input | The one-line error | Exit code |", "|---|---|---|", *lines, END])


def render(path: Path, lines: list[str]) -> str:
    """`path`'s text with its catalogue block replaced by `lines`."""
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block to fill")
    return pattern.sub(lambda _: table(lines), text)


def expected_files(cases) -> dict[Path, str]:
    """docs/bad-inputs.md and README.md as they must read, from the cases."""
    every = rows(cases)
    return {ROOT / "docs" / "bad-inputs.md": render(ROOT / "docs" / "bad-inputs.md", list(every.values())),
            ROOT / "README.md": render(ROOT / "README.md", [every[key] for key in README_SELECTION])}


def all_cases() -> list:
    """The cases of both catalogue files, in table order."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_bad_inputs import CASES
    from test_bad_inputs_io import CASES as IO_CASES

    return [*CASES, *IO_CASES]


def main() -> None:
    for path, text in expected_files(all_cases()).items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
