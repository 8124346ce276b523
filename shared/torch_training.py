"""One training loop for the torch verticals (medical, traffic), written once.

A vertical supplies what is its own: how to build the network and its optimiser, the batches
of an epoch, the loss of one batch, the validation metric, and optionally a learning-rate
shape. The core does the rest the same way for every network:

- seeds Python, NumPy and torch before the network is built (same seed, same model);
- runs on `ctx.device`, with bf16/fp16 autocast when `ctx.device.precision` asks for it
  (and a GradScaler for fp16), and clips gradients;
- validates every `val_every` epochs, keeps the best weights (`best.pt`) and stops early
  after `patience` validations without a better metric, restoring the best weights;
- stops at a wall-clock deadline (`training.max_minutes`, or `training.cpu_minutes` on a
  CPU), between batches, so a budget is kept even when one epoch is long;
- writes `last.pt` after every epoch and `best.pt` on every improvement atomically (a
  temporary file in the same folder, then `os.replace`), keeping the one before as
  `previous.pt`, so a resume finds a complete checkpoint even if a file was cut short;
- writes the run's `history.csv` (one row per model and epoch) after every epoch;
- on several workers (`ctx.workers`, under Ray Train's TorchTrainer) trains in DDP: each
  worker takes every size-th batch of an epoch (as many on every worker), gradients are
  averaged, the chief's validation and clock decide for all (so they stop together), and
  only the chief writes checkpoints and history.

torch is imported only inside functions: `verticals.core` imports on installs without it.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sized
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from verticals.core.contract import RunContext
from verticals.core.errors import UserError
from verticals.core.seeding import seed_everything

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

FORMAT = 1
HISTORY = "history.csv"
_STATE_KEYS = {"format", "name", "epoch", "step", "elapsed", "best", "stale", "history", "model"}


# ---------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """How long and how to train one network (from the vertical's `training.*`)."""

    epochs: int
    grad_clip: float | None = None  # max gradient norm; None: no clipping
    val_every: int = 1  # epochs between validations (the last epoch always validates)
    patience: int | None = None  # validations without a better metric before stopping
    min_delta: float = 0.0  # an improvement smaller than this does not count
    mode: Literal["min", "max"] = "min"  # whether a lower or a higher metric is better
    deadline: float | None = None  # time.perf_counter() by which training stops


@dataclass
class Hooks:
    """What a vertical supplies to the loop: its data, loss and metric."""

    #: The training batches of epoch `epoch` (1-based), in the vertical's own form. Derive
    #: any shuffling from the seed and the epoch, so a resumed run draws what a whole run would.
    batches: Callable[[int], Iterable[Any]]
    #: The loss of one batch (a scalar tensor); called under the run's autocast.
    loss: Callable[[Any, Any], Any]
    #: The validation metric of the network; called in eval mode, under inference_mode.
    validate: Callable[[Any], float]
    #: Multiplier of the base learning rate at training progress 0..1 (steps or budget,
    #: whichever is further); None keeps the learning rate constant.
    lr_factor: Callable[[float], float] | None = None


def budget_minutes(training: Any, device: Any, log: Any) -> float | None:
    """The training budget in minutes: `training.max_minutes` when set; on a CPU otherwise
    `training.cpu_minutes`, so a default recipe finishes on a laptop (logged, with how to
    lift it); else None. It covers this command's training, not earlier resumed runs."""
    if training.max_minutes is not None:
        return float(training.max_minutes)
    cpu = training.get("cpu_minutes")
    if cpu is not None and not device.is_cuda:
        log.info(
            "CPU: training capped at %g minutes (training.cpu_minutes); set "
            "training.cpu_minutes=null for the full recipe",
            float(cpu),
        )
        return float(cpu)
    return None


def deadline_after(minutes: float | None, started: float | None = None) -> float | None:
    """The `time.perf_counter()` value `minutes` after `started` (default: now)."""
    if minutes is None:
        return None
    return (time.perf_counter() if started is None else started) + float(minutes) * 60.0


def seed_torch(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA), importing torch if need be."""
    import torch  # noqa: F401 - seed_everything seeds torch only once it is imported

    seed_everything(seed)


def autocast(device: Any) -> Any:
    """bf16/fp16 autocast as `device.precision` asks (bf16 on a CPU only when asked)."""
    import torch

    if device.precision not in ("bf16", "fp16"):
        return nullcontext()
    dtype = torch.bfloat16 if device.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.kind, dtype=dtype)


# ---------------------------------------------------------------------------- files


def save_atomic(obj: Any, path: Path, keep_previous: str | None = None) -> None:
    """`torch.save` so that `path` is always the old file or the new one, never half.

    The object goes to a temporary file in the same folder, is flushed to disk, and then
    replaces `path`; on any error the temporary file is removed and `path` is untouched.
    With `keep_previous`, the file `path` held is kept under that name first.
    """
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; runs are shared artefacts
        if keep_previous and path.is_file():
            os.replace(path, path.with_name(keep_previous))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointError(Exception):
    """A checkpoint file that cannot be read (cut short, corrupt, or not torch's)."""


def load_file(path: Path) -> Any:
    """`torch.load` on the CPU with plain data only; a unreadable file is a CheckpointError
    whose message is torch's first line, not a traceback from inside its unpickler."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zips, bad pickles, EOF: torch raises many types
        text = str(exc).strip().splitlines()
        raise CheckpointError(text[0][:160] if text else type(exc).__name__) from None


@dataclass(frozen=True)
class Checkpoints:
    """Where one network's checkpoints live: `last.pt`, `previous.pt` (the last before it)
    and `best.pt` (weights only) in `folder`; with a `stem` (a run that trains several
    networks), `<stem>.pt`, `<stem>.previous.pt` and `<stem>.best.pt`."""

    folder: Path
    stem: str | None = None

    def _name(self, kind: str) -> Path:
        if self.stem is None:
            return self.folder / f"{kind}.pt"
        return self.folder / (f"{self.stem}.pt" if kind == "last" else f"{self.stem}.{kind}.pt")

    @property
    def last(self) -> Path:
        return self._name("last")

    @property
    def previous(self) -> Path:
        return self._name("previous")

    @property
    def best(self) -> Path:
        return self._name("best")


@dataclass
class Resume:
    """The complete training checkpoint a run continues from."""

    state: dict[str, Any]
    path: Path
    files: Checkpoints

    @property
    def meta(self) -> dict[str, Any]:
        """What the vertical stored beside the weights (its network config, recipe)."""
        return dict(self.state.get("meta") or {})


def find_resume(
    spec: str, files: Checkpoints, log: Any, *, file: Path | None = None, required: bool = True
) -> Resume | None:
    """The last complete training checkpoint among `files` (or the given `file`).

    The last checkpoint is tried first, then the one before it. A file that cannot be read
    is skipped with a warning naming it; when none is complete the run stops with one line
    saying so. No checkpoint at all is an error when `required`, else None (a network whose
    training had not started: it starts afresh). `spec` is the user's `training.resume`.
    """
    candidates = [files.last, files.previous]
    if file is not None:
        candidates = [file] + ([files.previous] if file.name == files.last.name else [])
    problems: list[str] = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            state = load_file(path)
        except CheckpointError as exc:
            problems.append(f"{path.name} is cut short or corrupt ({exc})")
            continue
        if isinstance(state, dict) and "format" not in state and "optimizer" in state:
            raise UserError(
                f"training.resume={spec}: {path} was written by an earlier version of this "
                "training and cannot be continued: train afresh"
            )
        if not isinstance(state, dict) or not state.keys() >= _STATE_KEYS:
            raise UserError(
                f"training.resume={spec}: {path} is not a training checkpoint (give the run "
                f"folder, or its {files.last.name}; {files.best.name} holds weights only)"
            )
        if problems:
            log.warning(
                "training.resume: %s; resuming from %s (epoch %d)",
                "; ".join(problems),
                path.name,
                int(state["epoch"]),
            )
        return Resume(state, path, files)
    if problems:
        raise UserError(
            f"training.resume={spec}: {'; '.join(problems)} in {files.folder}, and no earlier "
            "complete checkpoint is there: train without training.resume"
        )
    if required:
        raise UserError(f"training.resume={spec}: no checkpoint at {files.last}")
    return None


def write_history(run_dir: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    """Put `name`'s rows into the run's history.csv, beside other models' rows (one file
    per run, one row per model and epoch), atomically."""
    import csv
    import io

    from verticals.core.runs import write_atomic

    path = run_dir / HISTORY
    others: list[dict[str, Any]] = []
    if path.is_file():
        with path.open(newline="") as fh:
            others = [r for r in csv.DictReader(fh) if r.get("model") != name]
    table = others + [{"model": name, **row} for row in rows]  # rows name their model
    columns: list[str] = []
    for row in table:
        columns += [c for c in row if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    write_atomic(path, out.getvalue())
    return path


def _cell(value: Any) -> Any:
    """Blank for a missing value (as pandas writes NaN), else the value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


# ---------------------------------------------------------------------------- the loop


@dataclass
class Result:
    """What a finished loop hands back: the network with its best weights loaded."""

    module: Any
    history: list[dict[str, Any]]
    best: float | None
    best_epoch: int | None
    stopped: str  # epochs | patience | budget | done (nothing left to train)


@dataclass
class _Progress:
    epoch: int = 0  # the last finished epoch
    step: int = 0
    elapsed: float = 0.0  # training seconds of this model, resumed runs included
    best: float | None = None
    best_epoch: int | None = None
    stale: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class _Share:
    """Every `size`-th item of `items` from `rank`, `count` of them (a Sized iterable, so
    the loop knows the steps of an epoch)."""

    def __init__(self, items: Any, rank: int, size: int, count: int) -> None:
        self.items, self.rank, self.size, self.count = items, rank, size, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Any:
        import itertools

        stop = self.rank + self.size * self.count
        return itertools.islice(self.items, self.rank, stop, self.size)


def _ddp(module: Any, device: Any) -> Any:
    """`module` in DistributedDataParallel, in the process group Ray Train set up."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        raise UserError("ctx.workers is set but no torch process group is: train under Ray Train")
    ids = [torch.cuda.current_device()] if device.is_cuda else None
    # a network may leave parameters out of a step (traffic's baseline head): DDP must know
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=ids, find_unused_parameters=True
    )


class Trainer:
    """One network's training run: build (seeded), optimise, validate, checkpoint, resume.

    `build` makes the network and `optimizer` its optimiser from its parameters; both run
    here, right after seeding, so the same seed gives the same initial weights. `files` say
    where this network's checkpoints go; `meta` (plain data: the network config, the
    preprocessing recipe) is stored in them and comes back as `Resume.meta`. `resume`
    continues from that checkpoint: weights, optimiser, scaler, epoch, best metric and
    history; the learning rate and every `Settings` value come from this command.
    """

    def __init__(
        self,
        ctx: RunContext,
        name: str,
        build: Callable[[], torch.nn.Module],
        optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer],
        settings: Settings,
        files: Checkpoints,
        *,
        metric: str = "val_metric",
        loss_name: str = "loss",
        meta: dict[str, Any] | None = None,
        resume: Resume | None = None,
    ) -> None:
        import torch

        self.ctx, self.name, self.settings, self.files = ctx, name, settings, files
        self.metric, self.loss_name, self.meta = metric, loss_name, dict(meta or {})
        self.device = torch.device(ctx.device.kind)
        workers = ctx.workers if ctx.workers is not None and ctx.workers.size > 1 else None
        self.workers, self.chief = workers, workers is None or workers.chief
        seed_torch(ctx.seed)
        self.module = build().to(self.device)
        self.forward: Any = self.module  # what a training step calls: DDP's wrapper on workers
        if workers is not None:
            self.forward = _ddp(self.module, ctx.device)
        self.optimizer = optimizer(self.module.parameters())
        self.base_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
        fp16 = ctx.device.is_cuda and ctx.device.precision == "fp16"
        self.scaler = torch.amp.GradScaler(ctx.device.kind, enabled=fp16)
        self.progress = _Progress()
        self.best_state: dict[str, Any] | None = None
        if resume is not None:
            self._restore(resume)

    # -- resume

    def _restore(self, resume: Resume) -> None:
        state, log = resume.state, self.ctx.log
        try:
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise UserError(
                f"training.resume: {resume.path} does not fit this {self.name} network ({first})"
            ) from None
        for group, lr in zip(self.optimizer.param_groups, self.base_lr, strict=True):
            group["lr"] = lr  # this command's training.lr
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        p = self.progress
        p.epoch, p.step, p.elapsed = int(state["epoch"]), int(state["step"]), state["elapsed"]
        p.history = [dict(r) for r in state["history"]]
        p.stale = 0  # asked to go on: early stopping counts afresh
        best = resume.files.best
        if state["best"] is not None and best.is_file():
            try:
                saved = load_file(best)
                self.best_state = saved["model"]
                # best.pt's own figures: they belong to its weights, even when last.pt was
                # cut short and the state comes from the checkpoint before it
                p.best, p.best_epoch = saved["best"], saved.get("epoch")
                self.files.folder.mkdir(parents=True, exist_ok=True)
                if best.resolve() != self.files.best.resolve():
                    shutil.copy2(best, self.files.best)  # the best so far stays the baseline
            except (CheckpointError, KeyError, TypeError) as exc:
                log.warning(
                    "training.resume: %s cannot be read (%s); the next validation sets the best",
                    best,
                    exc,
                )
        log.info(
            "%s: resuming from %s after epoch %d (best %s %s)",
            self.name,
            resume.path,
            p.epoch,
            self.metric,
            "none" if p.best is None else f"{p.best:.4f}",
        )

    @property
    def epochs_done(self) -> int:
        """Epochs finished so far, those of a resumed run included."""
        return self.progress.epoch

    # -- the loop

    def fit(self, hooks: Hooks, finished_ok: bool = False) -> Result:
        """Train to `settings.epochs`, early stopping or the deadline, whichever is first;
        return the network with its best weights. A resumed run that already finished its
        epochs is an error (set training.epochs higher), unless `finished_ok`."""
        from tqdm.auto import tqdm

        s, p, log = self.settings, self.progress, self.ctx.log
        if p.epoch >= s.epochs:
            if not finished_ok:
                raise UserError(
                    f"training.resume: that run finished {p.epoch} epochs of {self.name}; "
                    f"set training.epochs above {p.epoch}"
                )
            # The new run folder gets this network's checkpoint and history too, so a run
            # that resumes this one finds it (instead of training it afresh).
            if self.chief:
                self._checkpoint()
                write_history(self.ctx.run_dir, self.name, p.history)
            return self._finish("done")
        started = time.perf_counter()
        elapsed0, steps_per_epoch = p.elapsed, None
        start_progress = None  # where the learning-rate schedule stood when this command began
        stopped = "epochs"
        self.module.train()
        for epoch in range(p.epoch + 1, s.epochs + 1):
            batches = self._share(hooks.batches(epoch))
            if steps_per_epoch is None and isinstance(batches, Sized):
                steps_per_epoch = max(1, len(batches))
            total = s.epochs * steps_per_epoch if steps_per_epoch else None
            if start_progress is None:
                start_progress = min(1.0, p.step / total) if total else 0.0
            losses: list[float] = []
            bar = tqdm(
                batches,
                desc=f"{self.name} {epoch}/{s.epochs}",
                unit="batch",
                leave=False,
                disable=not self.chief,
            )
            out_of_time = False
            for batch in bar:
                if hooks.lr_factor is not None:
                    factor = hooks.lr_factor(self._progress(started, start_progress, total))
                    for group, lr in zip(self.optimizer.param_groups, self.base_lr, strict=True):
                        group["lr"] = lr * factor
                losses.append(self._step(hooks, batch))
                bar.set_postfix({self.loss_name: f"{losses[-1]:.3f}"})
                if s.deadline is not None and self._past(s.deadline):
                    out_of_time = True
                    break
            bar.close()
            p.epoch, p.elapsed = epoch, elapsed0 + time.perf_counter() - started
            last = epoch == s.epochs or out_of_time
            value = float("nan")
            if epoch % s.val_every == 0 or last:
                value = self._agreed(self._validate(hooks), "chief")
            row = {
                "model": self.name,
                "epoch": epoch,
                self.loss_name: float(sum(losses) / len(losses)) if losses else float("nan"),
                self.metric: value,
                "lr": float(self.optimizer.param_groups[0]["lr"]),
                "seconds": round(elapsed0 + time.perf_counter() - started, 2),
            }
            p.history.append(row)
            improved = self._better(value)
            if improved:
                p.best, p.best_epoch, p.stale = value, epoch, 0
                self.best_state = {k: v.detach().cpu().clone() for k, v in self._weights()}
                if self.chief:
                    best = {"model": self.best_state, "epoch": epoch, "best": value}
                    save_atomic({**best, "name": self.name}, self.files.best)
            elif value == value:  # a validation that did not improve
                p.stale += 1
            shown = f", {self.metric} {value:.4f}" if value == value else ""
            log.info(
                "%s epoch %d: %s %.4f%s, %.0f s",
                self.name,
                epoch,
                self.loss_name,
                row[self.loss_name],
                shown,
                row["seconds"],
            )
            if self.chief:
                self._checkpoint()
                write_history(self.ctx.run_dir, self.name, p.history)
            if out_of_time:
                stopped = "budget"
                log.info("%s: training budget reached in epoch %d; stopping", self.name, epoch)
                break
            if s.patience is not None and p.stale >= s.patience:
                stopped = "patience"
                log.info(
                    "%s: no better %s for %d validations; stopping", self.name, self.metric, p.stale
                )
                break
        return self._finish(stopped)

    def _progress(self, started: float, start: float, total: int | None) -> float:
        """Training progress 0..1: steps done of all planned, or the share of the budget
        used (the schedule runs from where it stood to its end by the deadline)."""
        p, s = self.progress, self.settings
        done = min(1.0, p.step / total) if total else 0.0
        if s.deadline is not None and s.deadline > started:
            used = (time.perf_counter() - started) / (s.deadline - started)
            done = max(done, start + (1.0 - start) * min(1.0, used))
        return self._agreed(done, "max")  # one learning rate on every worker

    def _agreed(self, value: float, how: str) -> float:
        """`value` as all workers agree on it: the largest (`max`) or the chief's (`chief`),
        so that their learning rates and stopping decisions never part (one process: as is).
        Workers' clocks and BatchNorm statistics differ, and a worker that stopped alone
        would leave the others waiting in DDP forever."""
        if self.workers is None:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        if how == "max":
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        else:
            dist.broadcast(t, src=0)
        return float(t.item())

    def _step(self, hooks: Hooks, batch: Any) -> float:
        import torch

        with autocast(self.ctx.device):
            loss = hooks.loss(self.forward, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), float(self.settings.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.progress.step += 1
        return float(loss.detach())

    def _share(self, batches: Iterable[Any]) -> Iterable[Any]:
        """This worker's batches of an epoch: every size-th from its rank, as many on every
        worker (DDP waits for all at each step); all of them on one process."""
        if self.workers is None:
            return batches
        listed = batches if isinstance(batches, Sized) else list(batches)
        rank, size = self.workers.rank, self.workers.size
        each = len(listed) // size
        if each == 0:
            raise UserError(
                f"{self.name}: an epoch has {len(listed)} batches, fewer than the "
                f"{size} workers (cluster.workers): lower the batch size or the workers"
            )
        return _Share(listed, rank, size, each)

    def _past(self, deadline: float) -> bool:
        """Whether the deadline has passed: on workers, for any of them, so all stop at the
        same step (one would otherwise wait for the others forever)."""
        return self._agreed(1.0 if time.perf_counter() >= deadline else 0.0, "max") > 0

    def _validate(self, hooks: Hooks) -> float:
        import torch

        self.module.eval()
        try:
            with torch.inference_mode(), autocast(self.ctx.device):
                return float(hooks.validate(self.module))
        finally:
            self.module.train()

    def _better(self, value: float) -> bool:
        if value != value:  # NaN: no validation this epoch, or nothing to score
            return False
        best = self.progress.best
        if best is None:
            return True
        if self.settings.mode == "min":
            return value < best - self.settings.min_delta
        return value > best + self.settings.min_delta

    def _weights(self) -> Iterable[tuple[str, Any]]:
        return self.module.state_dict().items()

    def _checkpoint(self) -> None:
        p = self.progress
        state = {
            "format": FORMAT,
            "name": self.name,
            "epoch": p.epoch,
            "step": p.step,
            "elapsed": p.elapsed,
            "best": p.best,
            "best_epoch": p.best_epoch,
            "stale": p.stale,
            "history": p.history,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "meta": self.meta,
        }
        save_atomic(state, self.files.last, keep_previous=self.files.previous.name)

    def _finish(self, stopped: str) -> Result:
        p = self.progress
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)
            self.ctx.log.info(
                "%s: kept the best weights: epoch %s, %s %.4f",
                self.name,
                p.best_epoch,
                self.metric,
                p.best,
            )
        self.module.eval()
        return Result(self.module, p.history, p.best, p.best_epoch, stopped)
