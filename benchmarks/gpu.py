"""The GPU path in one call: correctness on CUDA first, then training throughput, MFU and memory.

    bash benchmarks/gpu.sh                      # on a GPU machine: installs what it lacks, runs all of it
    python benchmarks/gpu.py --smoke            # anywhere (CPU included): every section at toy sizes
    python benchmarks/gpu.py --sections models,loader --budget 300 --json-out gpu.json

Sections, in order (each prints its rows as it goes; one table at the end):
  correctness  a few training steps of a small model on the device against the CPU fp32 run (bf16
               tolerance); a run stopped at a checkpoint and resumed on the device equals the straight
               run bit for bit (deterministic kernels on); `vit eval` and `vit fewshot` on the device
               give the CPU's numbers. All through the real `vit` CLI in subprocesses.
  models       Ti/16, S/16, B/16, L/16 at 224 px and B/16 at 384 px: eager vs torch.compile.
  backends     B/16 224 px: the fused SDPA backends (flash, memory-efficient, math) one at a time.
  batch        B/16 224 px: micro-batch sizes.
  loader       the real data loader on synthetic JPEG images made here (ImageNet-like sizes) against
               in-memory batches: the device's batched JPEG decode alone (nvJPEG), loader images/s alone
               at several worker counts with data.decode cpu and gpu, and a short real `vit pretrain` run
               fed by it (data.decode auto: gpu on CUDA).
Timings are CUDA events around each step after warm-up (wall clock with a synchronise on CPU); the
median step is reported. MFU = 6 x forward MACs x images/s / a dense bf16 matmul peak measured in this
same run (6 = 2 FLOPs per multiply-accumulate x forward + two backward matmuls).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from vitcli import recipe  # noqa: E402
from vitcli.engine.runtime.process import Runtime  # noqa: E402
from vitcli.engine.runtime.progress import Reporter  # noqa: E402
from vitcli.engine.train.bench import (  # noqa: E402
    bench_recipe,
    matmul_peak,
    peak_memory_mb,
    reset_peak_memory,
    synthetic_batch,
    timed,
)
from vitcli.engine.train.step import TrainStep  # noqa: E402
from vitcli.models import macs, resolve_variant  # noqa: E402

SECTIONS = ("correctness", "models", "backends", "batch", "loader")
CLASSES = 1000


@dataclasses.dataclass
class Plan:
    """What to run: full sizes on a GPU, toy sizes with --smoke."""

    device: str
    models: list[tuple[str, int, int]]  # (variant, res, micro-batch)
    sweep_model: tuple[str, int]  # the model of the backend and batch sweeps
    batches: list[int]
    warmup: int
    steps: int
    peak_n: int
    compile: bool
    loader_images: int
    loader_size: tuple[int, int]
    loader_workers: list[int]
    shape: dict  # recipe model overrides for the toy models of --smoke

    @classmethod
    def create(cls, args) -> "Plan":
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if args.smoke:
            return cls(device=device, models=[("Ti/4", 32, 8), ("Ti/8", 32, 8)], sweep_model=("Ti/4", 32),
                       batches=[4, 8], warmup=1, steps=2, peak_n=256, compile=not args.no_compile,
                       loader_images=48, loader_size=(48, 40), loader_workers=[0, 2],
                       shape={"width": 32, "depth": 2, "heads": 2, "mlp_dim": 64})
        return cls(device=device,
                   models=[("Ti/16", 224, 256), ("S/16", 224, 256), ("B/16", 224, 256), ("L/16", 224, 128),
                           ("B/16", 384, 64)],
                   sweep_model=("B/16", 224), batches=[64, 128, 256, 512], warmup=5, steps=20, peak_n=8192,
                   compile=not args.no_compile, loader_images=6000, loader_size=(500, 375),
                   loader_workers=[8, 16], shape={})


class Budget:
    """Stop starting new rows once the time is spent, so the table always prints inside one call."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# -- timing --------------------------------------------------------------------------------------------
class StepTimer:
    """The engine's own training step (`TrainStep`) on fixed in-memory batches, timed step by step."""

    def __init__(self, cfg, rt: Runtime):
        cfg = bench_recipe(cfg)
        self.rt, self.done = rt, 0
        self.step = TrainStep(cfg, CLASSES, rt, Reporter(enabled=False))
        self.batch = synthetic_batch(cfg, rt.device)

    def run(self, steps: int) -> list[float]:
        """Seconds of each of `steps` further steps (CUDA events on a GPU)."""
        times = []
        for _ in range(steps):
            times.append(timed(lambda: self.step.run(self.batch, self.step.peak_lr, self.done), self.rt.device))
            self.done += 1
        return times

    def reset_peak_memory(self) -> None:
        reset_peak_memory(self.rt.device)

    def peak_memory_bytes(self) -> float:
        return (peak_memory_mb(self.rt.device) or 0.0) * 2**20


def time_training(plan: Plan, variant: str, res: int, batch: int, *, compile: bool = False,
                  backend: str | None = None) -> dict:
    """Median seconds per training step of the engine's own step on in-memory batches, and its figures."""
    cfg = _recipe(plan, variant, res, batch, compile)
    rt = Runtime.create(plan.device, "bf16", 0)
    row = {"model": variant, "res": res, "batch": batch, "mode": "compile" if compile else "eager",
           "backend": backend or "auto"}
    try:
        with _sdpa(backend):
            timer = StepTimer(cfg, rt)
            first = timer.run(1)[0]  # includes compilation when compiling
            timer.run(max(0, plan.warmup - 1))
            timer.reset_peak_memory()
            times = timer.run(plan.steps)
    except torch.cuda.OutOfMemoryError:
        return {**row, "note": "out of memory"}
    except RuntimeError as exc:  # e.g. "No available kernel" for a backend this device lacks
        return {**row, "note": f"unavailable: {str(exc).splitlines()[0][:80]}"}
    finally:
        _free()
    step_s = statistics.median(times)
    img_s = batch / step_s
    fwd = macs(resolve_variant(cfg.model), cfg.model.res, CLASSES)
    return {**row, "img_s": img_s, "step_ms": step_s * 1e3, "first_step_s": first,
            "train_tflops": 6 * fwd * img_s / 1e12, "peak_mem_gb": timer.peak_memory_bytes() / 2**30}


def _recipe(plan: Plan, variant: str, res: int, batch: int, compile: bool):
    model = {"name": variant, "res": res, **plan.shape}
    return recipe.from_data({
        "model": model,
        "data": {"source": "synthetic", "eval_split": None, "num_classes": CLASSES},
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "clip_norm": 1.0},
        "train": {"batch_size": batch, "micro_batch": batch, "steps": 1000, "precision": "bf16",
                  "compile": compile, "device": plan.device},
        "eval": {"evaluators": []},
    }, "benchmarks/gpu.py")


def _sdpa(backend: str | None):
    from contextlib import nullcontext

    if backend is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([{"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                         "math": SDPBackend.MATH}[backend]])


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch._dynamo.reset()  # compiled graphs of the last model would pile up otherwise


# -- sections ------------------------------------------------------------------------------------------
def section_models(plan: Plan, budget: Budget, emit) -> None:
    for variant, res, batch in plan.models:
        for compile in ((False, True) if plan.compile else (False,)):
            if budget.left() < 20:
                emit({"model": variant, "res": res, "batch": batch, "mode": "compile" if compile else "eager",
                      "note": "skipped: time budget"})
                continue
            emit(time_training(plan, variant, res, batch, compile=compile))


def section_backends(plan: Plan, budget: Budget, emit) -> None:
    variant, res = plan.sweep_model
    batch = plan.batches[len(plan.batches) // 2]
    for backend in ("flash", "efficient", "math"):
        if budget.left() < 20:
            emit({"model": variant, "res": res, "backend": backend, "note": "skipped: time budget"})
            continue
        emit(time_training(plan, variant, res, batch, backend=backend))


def section_batch(plan: Plan, budget: Budget, emit) -> None:
    variant, res = plan.sweep_model
    for batch in plan.batches:
        if budget.left() < 20:
            emit({"model": variant, "res": res, "batch": batch, "note": "skipped: time budget"})
            continue
        emit(time_training(plan, variant, res, batch))


def section_loader(plan: Plan, budget: Budget, emit, work: Path) -> None:
    """Loader images/s alone (several worker counts) and a short real run fed by it."""
    from vitcli.recipe.config import DataCfg
    from vitcli.data import load_split, train_loader

    folder = make_jpegs(work / "jpegs", plan.loader_images, plan.loader_size)
    variant, res = plan.sweep_model
    batch = plan.batches[len(plan.batches) // 2]
    split = load_split(f"imagefolder:{folder}", "train")
    emit(nvjpeg_row(plan, folder, batch))
    for workers in plan.loader_workers:
        for decode in ("cpu", "gpu"):  # data.decode: JPEGs decoded in the workers, or batched on the device
            mode = f"workers {workers}, decode {decode}"
            if budget.left() < 20:
                emit({"model": "loader", "res": res, "batch": batch, "mode": mode, "note": "skipped"})
                continue
            cfg = DataCfg(source=f"imagefolder:{folder}", workers=workers, decode=decode)
            loader = train_loader(split, cfg, (res, res), batch, seed=0, workers=workers, device=plan.device)
            emit({"model": "loader", "res": res, "batch": batch, "mode": mode, **_loader_rate(loader, plan.device)})
    if budget.left() < 60:
        emit({"model": variant, "res": res, "batch": batch, "mode": "real loader", "note": "skipped: time budget"})
        return
    emit(real_loader_run(plan, folder, variant, res, batch, work))


def _loader_rate(loader, device: str) -> dict:
    """Images/s of a loader after its first batch (worker start-up is not its steady rate), the batches
    normalised on `device` as training gets them."""
    seen, start, first = 0, time.perf_counter(), None
    for images, _ in loader:
        if first is None:
            first, start = time.perf_counter() - start, time.perf_counter()
            continue
        seen += images.shape[0]
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"loader_img_s": seen / elapsed if elapsed > 0 else None, "first_step_s": first}


def nvjpeg_row(plan: Plan, folder: Path, batch: int) -> dict:
    """The device's JPEG decoder alone: batched `torchvision.io.decode_jpeg(list, device=...)` (nvJPEG on
    CUDA, what data.decode gpu calls) over the generated files, bytes already in memory; decodes/s."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    files = sorted(folder.rglob("*.jpg"))[: 4 * batch]
    datas = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    chunks = [datas[i : i + batch] for i in range(0, len(datas), batch)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        decode_jpeg(chunks[0], mode=ImageReadMode.RGB, device=plan.device)  # warm-up (nvJPEG handles)
        seconds = timed(lambda: [decode_jpeg(c, mode=ImageReadMode.RGB, device=plan.device) for c in chunks],
                        torch.device(plan.device))
    return {"model": "nvjpeg" if plan.device == "cuda" else "decode_jpeg (cpu)", "res": "-", "batch": batch,
            "mode": "decode only", "loader_img_s": len(datas) / seconds if seconds > 0 else None}


def make_jpegs(folder: Path, n: int, size: tuple[int, int], classes: int = 10) -> Path:
    """`n` JPEG files of smooth random colour (quality 90, ImageNet-like sizes) in class folders."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(folder / f"class{i % classes}" / f"{i:06d}.jpg", size, i) for i in range(n)]
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    workers = min(16, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_jpeg, jobs, chunksize=64))
    return folder


def _write_jpeg(job) -> None:
    import numpy as np
    from PIL import Image

    path, (width, height), seed = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    noise = rng.normal(0, 12, (height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def real_loader_run(plan: Plan, folder: Path, variant: str, res: int, batch: int, work: Path) -> dict:
    """`vit pretrain` on the JPEG folder for a few dozen steps; images/s from its own metrics.jsonl."""
    steps = 4 * plan.steps if plan.device == "cuda" else 3
    out = work / "loader-run"
    sets = [f"model.name={variant}", f"model.res={res}", f"train.batch_size={batch}", f"train.steps={steps}",
            "train.log_every=1", "train.checkpoint_every=0", "train.precision=bf16", f"train.device={plan.device}",
            "eval.evaluators=[]", "data.eval_split=null", "optim.name=adamw", *_shape_sets(plan)]
    proc = vit("pretrain", str(work / "base.yaml"), "--out", str(out), *sum((["--set", s] for s in sets), []),
               source=f"imagefolder:{folder}", work=work)
    row = {"model": variant, "res": res, "batch": batch, "mode": "real loader", "backend": "auto"}
    if proc.returncode != 0:
        return {**row, "note": f"failed: {_last_line(proc)}"}
    rates = [r["img_s"] for r in _metrics(out) if "img_s" in r][len(_metrics(out)) // 3:]  # after warm-up
    return {**row, "img_s": statistics.median(rates) if rates else None}


def _shape_sets(plan: Plan) -> list[str]:
    return [f"model.{k}={v}" for k, v in plan.shape.items()]


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# -- correctness ---------------------------------------------------------------------------------------
def section_correctness(plan: Plan, budget: Budget, emit, work: Path) -> None:
    """The device against the CPU: training losses, resume bit for bit, eval and few-shot numbers."""
    common = ["model.name=Ti/4", "model.res=16", "model.width=64", "model.depth=2", "model.heads=2",
              "model.mlp_dim=128", "train.batch_size=32", "train.steps=8", "train.log_every=1",
              "train.checkpoint_every=4", "train.keep_checkpoints=4", "data.workers=0",
              "fewshot.shots=[1,5]", "fewshot.seeds=1"]
    device = plan.device
    runs = {}
    for name, extra in (("cpu-fp32", ["train.device=cpu", "train.precision=fp32"]),
                        ("device-bf16", [f"train.device={device}", "train.precision=bf16"]),
                        ("device-fp32", [f"train.device={device}", "train.precision=fp32"])):
        out = work / name
        proc = vit("pretrain", str(work / "base.yaml"), "--out", str(out), *sum((["--set", s] for s in
                   [*common, *extra]), []), source="builtin:digits", work=work, deterministic=True)
        if proc.returncode != 0:
            emit({"check": f"train {name}", "ok": False, "note": _last_line(proc)})
            return
        runs[name] = out
    cpu = [r["loss"] for r in _metrics(runs["cpu-fp32"]) if "loss" in r and "top1" not in r]
    dev = [r["loss"] for r in _metrics(runs["device-bf16"]) if "loss" in r and "top1" not in r]
    worst = max(abs(a - b) / abs(a) for a, b in zip(cpu, dev))
    emit({"check": f"{device} bf16 losses vs cpu fp32 (8 steps)", "ok": len(cpu) == len(dev) == 8 and worst < 0.02,
          "value": f"max rel diff {worst:.2e} (tolerance 2e-2)"})
    emit(resume_check(runs["device-fp32"], common, device, work))
    for command, key in (("eval", "top1"), ("fewshot", None)):
        emit(compare_numbers(command, key, runs["device-fp32"], device, work))


def resume_check(straight: Path, common: list[str], device: str, work: Path) -> dict:
    """Copy the straight run as it was at step 4, resume it on the device, compare final weights."""
    resumed = work / "resumed"
    resumed.mkdir()
    for name in ("recipe.yaml", "recipe.json"):
        shutil.copy2(straight / name, resumed / name)
    (resumed / "checkpoints").mkdir()
    shutil.copy2(straight / "checkpoints" / "step-00000004.pt", resumed / "checkpoints" / "step-00000004.pt")
    (resumed / "checkpoints" / "latest").write_text("step-00000004.pt")
    rows = [line for line in (straight / "metrics.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= 4 and "top1" not in line]
    (resumed / "metrics.jsonl").write_text("".join(r + "\n" for r in rows))
    sets = [*common, f"train.device={device}", "train.precision=fp32"]
    proc = vit("pretrain", str(work / "base.yaml"), "--out", str(resumed), "--resume",
               *sum((["--set", s] for s in sets), []), source="builtin:digits", work=work, deterministic=True)
    if proc.returncode != 0:
        return {"check": f"resume on {device}", "ok": False, "note": _last_line(proc)}
    diff = _max_abs_diff(straight / "model.safetensors", resumed / "model.safetensors")
    return {"check": f"stop at step 4, resume on {device}: final weights bit for bit", "ok": diff == 0.0,
            "value": "identical" if diff == 0.0 else f"max abs diff {diff:.3g}"}


def compare_numbers(command: str, key: str | None, run: Path, device: str, work: Path) -> dict:
    """`vit eval` / `vit fewshot` of one run on the CPU and on the device, fp32: the same numbers."""
    results = {}
    for where in ("cpu", device):
        proc = vit(command, "--from", str(run), "--json", "--set", f"train.device={where}",
                   "--set", "train.precision=fp32", work=work, deterministic=True)
        if proc.returncode != 0:
            return {"check": f"vit {command} on {where}", "ok": False, "note": _last_line(proc)}
        results[where] = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = results["cpu"], results[device]
    if key:  # eval: top-1 equal, loss within fp32/TF32 rounding
        ok = a[key] == b[key] and abs(a["loss"] - b["loss"]) < 1e-3
        value = f"top1 {a[key]:.4f} vs {b[key]:.4f}, loss {a['loss']:.5f} vs {b['loss']:.5f}"
    else:
        flat_a, flat_b = _accuracies(a["results"]), _accuracies(b["results"])
        ok = flat_a.keys() == flat_b.keys() and all(abs(flat_a[k] - flat_b[k]) < 1e-6 for k in flat_a)
        value = ", ".join(f"{k} {flat_a[k]:.4f} vs {flat_b.get(k, float('nan')):.4f}" for k in sorted(flat_a)
                          if k.endswith("mean"))
    return {"check": f"vit {command}: cpu vs {device} (fp32)", "ok": ok, "value": value}


def _accuracies(tree, prefix: str = "") -> dict[str, float]:
    """Every float under a few-shot result tree, keyed by its path (data set / shots / ...)."""
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        path = f"{prefix}{k}"
        if isinstance(v, float):
            out[path] = v
        elif isinstance(v, (dict, list)):
            out.update(_accuracies(v, path + "/"))
    return out


def _max_abs_diff(a: Path, b: Path) -> float:
    """Largest difference between two weight files (inf when their keys or shapes differ)."""
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    if x.keys() != y.keys() or any(x[k].shape != y[k].shape for k in x):
        return float("inf")
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


def vit(*args: str, source: str | None = None, work: Path, deterministic: bool = False) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess of this interpreter (what a user's `vit` runs)."""
    base = work / "base.yaml"
    if not base.is_file():
        base.write_text("data:\n  source: builtin:digits\n  train_crop: resize\n  flip: false\n"
                        "eval:\n  batch_size: 128\n")
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    launcher = "from vitcli.cli import main; main()"
    if deterministic:
        # Atomics in some CUDA backward kernels make reruns differ in the last bits; the resume check
        # asks for exact equality, so it runs with deterministic kernels (cuBLAS needs a fixed workspace).
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        launcher = "import torch; torch.use_deterministic_algorithms(True, warn_only=True); " + launcher
    extra = ["--set", f"data.source={source}"] if source else []
    return subprocess.run([sys.executable, "-c", launcher, *args, *extra], capture_output=True, text=True,
                          cwd=work, env=env, timeout=900)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1][:160] if lines else f"exit {proc.returncode}"


# -- report --------------------------------------------------------------------------------------------
def table(rows: list[dict], peak: float, header: dict) -> str:
    """One plain-text table of everything measured (the last thing printed)."""
    out = [f"device: {header['device_name']} | torch {header['torch']} | bf16 matmul peak "
           f"{peak / 1e12:.1f} TFLOP/s (measured, n={header['peak_n']})"]
    checks = [r for r in rows if "check" in r]
    for r in checks:
        out.append(f"  [{'ok' if r['ok'] else 'FAIL'}] {r['check']}: {r.get('value') or r.get('note', '')}")
    cols = ("model", "res", "batch", "mode", "backend", "img/s", "step ms", "MFU", "peak GB", "loader img/s", "note")
    out.append(" | ".join(cols))
    for r in (r for r in rows if "check" not in r):
        mfu = r["train_tflops"] * 1e12 / peak if r.get("train_tflops") and peak else None
        cells = (r.get("model"), r.get("res"), r.get("batch"), r.get("mode", ""), r.get("backend", ""),
                 _num(r.get("img_s"), 1), _num(r.get("step_ms"), 1), _num(mfu, 3), _num(r.get("peak_mem_gb"), 2),
                 _num(r.get("loader_img_s"), 0), r.get("note", ""))
        out.append(" | ".join("" if c is None else str(c) for c in cells))
    return "\n".join(out)


def _num(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes: runs anywhere in about a minute")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {SECTIONS}")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--budget", type=float, default=520.0, help="seconds; later rows are skipped after it")
    parser.add_argument("--json-out", type=Path, help="also write every row and the header as JSON here")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {unknown}; valid: {', '.join(SECTIONS)}")
    plan, budget = Plan.create(args), Budget(args.budget)
    device = torch.device(plan.device)
    header = {"device": plan.device, "torch": torch.__version__, "peak_n": plan.peak_n,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "smoke": args.smoke}
    peak = matmul_peak(device, "bf16", n=plan.peak_n)
    print(f"bf16 matmul peak {peak / 1e12:.2f} TFLOP/s on {header['device_name']}", flush=True)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)

    with tempfile.TemporaryDirectory(prefix="vit-gpu-") as tmp:
        work = Path(tmp)
        for name in sections:
            print(f"== {name} ({budget.left():.0f} s left)", flush=True)
            run = globals()[f"section_{name}"]
            run(plan, budget, emit, work) if name in ("correctness", "loader") else run(plan, budget, emit)
    if args.json_out:
        args.json_out.write_text(json.dumps({"header": {**header, "peak_flops": peak}, "rows": rows}, indent=1))
    print(table(rows, peak, header))
    return 0 if all(r["ok"] for r in rows if "check" in r) else 1


if __name__ == "__main__":
    sys.exit(main())
