"""The one training loop. Knows nothing of any dataset, model or strategy by name.

Data stays on the device as uint8; each step slices a batch by index, augments it on the device
(random crop with padding, horizontal flip; the task kinds move their targets along), normalises,
and runs under bf16 autocast with channels_last on CUDA (plain float32 on CPU). Losses come from
the task kinds, each on the items of the batch that carry its label. The best epoch is chosen on
validation; its weights are restored before the test set is predicted once.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from bench.config import TrainConfig
from bench.data import Split, TaskSet
from bench.kinds import TaskSpec

AUGMENT_CHUNK = 16384  # images augmented per call: bounds the crop's index tensors
# (model, normalised batch (B, C, H, W), the model's outputs on it) -> scalar added to the loss
ExtraLoss = Callable[[nn.Module, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
EpochCallback = Callable[[dict], None]


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    val_metrics: dict[str, dict[str, float]]  # task -> metric -> value, at the best epoch
    train_seconds: float = 0.0  # time in training steps only (no evaluation)
    images: int = 0  # training images processed
    extra: dict = field(default_factory=dict)  # strategy-specific results (e.g. R matrices)


class Trainer:
    def __init__(self, cfg: TrainConfig, device: torch.device, seed: int, on_epoch: EpochCallback | None = None):
        self.cfg = cfg
        self.device = device
        self.seed = seed
        self.on_epoch = on_epoch or (lambda row: None)
        self.cuda = device.type == "cuda"
        self.gen = torch.Generator(device=device).manual_seed(seed)

    # ---- public API -------------------------------------------------------------------------
    def fit(self, model: nn.Module, data: TaskSet, specs: dict[str, TaskSpec], *,
            train: Split | None = None, epochs: int | None = None, extra_loss: ExtraLoss | None = None,
            lr_factors: dict[str, float] | None = None, stage: str = "",
            monitor: dict[str, TaskSpec] | None = None) -> FitResult:
        """Train `model` on `train` (default: data.train) for the supervised losses of `specs`.

        The best epoch is the one with the best validation score (`select`: the loss-weighted sum
        of `specs`' validation losses, or their mean primary metric), the earliest on ties; its
        weights are restored before returning. `monitor`: more tasks the model predicts, scored on
        validation each epoch for the history only (a sequential stage's earlier tasks); they
        neither train nor select.
        """
        cfg, train = self.cfg, train if train is not None else data.train
        epochs = epochs or cfg.epochs
        steps_per_epoch = max(1, len(train) // cfg.batch_size)  # drop the ragged last batch
        images_per_epoch = min(steps_per_epoch * cfg.batch_size, len(train))  # a batch larger than train holds all of it
        graph = self._use_graph(extra_loss)
        opt = self._optimizer(model, lr_factors or {}, capturable=graph)
        base_lrs = [float(g["lr"]) for g in opt.param_groups]
        lr_at = self._schedule(epochs * steps_per_epoch, steps_per_epoch)
        norm = self.normaliser(data)
        weights = torch.tensor([self._weight(t) for t in specs], device=self.device)
        sums = torch.zeros(len(specs) + 2, device=self.device)  # per-task losses, extra, total
        step = self._step_fn(model, specs, opt, extra_loss, weights, sums, graph)
        if graph:
            step = self._graphed(step, model, opt, train, specs, norm)
        best, history, train_seconds = None, [], 0.0
        for epoch in range(1, epochs + 1):
            t0 = self._now()
            sums.zero_()
            self._train_epoch(model, train, specs, data, norm, step, steps_per_epoch,
                              lambda i, e=epoch: set_lr(opt, base_lrs, lr_at((e - 1) * steps_per_epoch + i)))
            seconds = self._now() - t0
            train_seconds += seconds
            row = self._epoch_row(epoch, stage, list(specs), self._checked(sums), steps_per_epoch, opt)
            row["train_seconds"] = seconds
            row["images_per_second"] = images_per_epoch / seconds
            val = self.evaluate(model, data, data.val, {**specs, **(monitor or {})})
            row.update({f"val_{t}_{m}": v for t, ms in val.items() for m, v in ms.items()})
            row["val_loss"] = sum(self._weight(t) * val[t]["loss"] for t in specs)
            history.append(row)
            self.on_epoch(row)
            score = self._selection_score(row, specs)
            if best is None or score > best[0]:
                best = (score, epoch, {t: val[t] for t in specs},
                        {k: v.detach().clone() for k, v in model.state_dict().items()})
        model.load_state_dict(best[3])
        return FitResult(history=history, best_epoch=best[1], val_metrics=best[2],
                         train_seconds=train_seconds, images=epochs * images_per_epoch)

    @torch.no_grad()
    def predict(self, model: nn.Module, data: TaskSet, split: Split, specs: dict[str, TaskSpec]) -> dict[str, torch.Tensor]:
        """Per task, its kind's predictions (float32 on the device) for the items of `split.part(task)`,
        the items that carry its label (every item when its labels are complete)."""
        preds = {}
        for tasks, part in split.groups(list(specs)):
            outs = self._outputs(model, data, part, {t: specs[t] for t in tasks})
            preds.update({t: specs[t].to_prediction(o) for t, o in outs.items()})
        return preds

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TaskSet, split: Split, specs: dict[str, TaskSpec]) -> dict[str, dict[str, float]]:
        """Per task: its metrics plus the mean loss on the items of `split` that carry its label."""
        result = {}
        for tasks, part in split.groups(list(specs)):
            for t, o in self._outputs(model, data, part, {t: specs[t] for t in tasks}).items():
                y = part.y[t]
                result[t] = specs[t].metrics(specs[t].to_prediction(o).cpu().numpy(), y.cpu().numpy())
                result[t]["loss"] = float(specs[t].loss(o, y))
        return result

    # ---- the hot loop -----------------------------------------------------------------------
    def _train_epoch(self, model, train, specs, data, norm, step, steps, set_step_lr) -> None:
        model.train()
        bs = self.cfg.batch_size
        # Augment and normalise the whole epoch up front: a few large kernels instead of many
        # small ones per step; a step is then a slice, forward/backward and the update.
        x, y, m = self._epoch_batches(train, specs, data, norm, steps * bs)
        for i in range(steps):
            set_step_lr(i)
            window = slice(i * bs, (i + 1) * bs)
            step(x[window], {t: v[window] for t, v in y.items()}, {t: v[window] for t, v in m.items()})

    def _step_fn(self, model, specs, opt, extra_loss, weights, sums, graph: bool) -> Callable:
        """One optimisation step on a normalised batch; adds its losses to `sums` on the device.

        yb: task -> targets; mb: task -> (B,) bool, which items carry that task's label (a task
        absent from mb is labelled on every item)."""
        tasks, smoothing = list(specs), self.cfg.label_smoothing

        def step(xb: torch.Tensor, yb: dict[str, torch.Tensor], mb: dict[str, torch.Tensor]) -> None:
            # autocast's weight cache must be off under capture; an extra loss's own forward passes
            # (e.g. a teacher's) run under the same autocast as the model's
            with self._autocast(cache=not graph):
                out = model(xb)
                extra = extra_loss(model, xb, out).float() if extra_loss else None
            parts = torch.stack([specs[t].loss(out[t], yb[t], label_smoothing=smoothing, labelled=mb.get(t))
                                 for t in tasks])
            extra = parts.new_zeros(()) if extra is None else extra
            total = (parts * weights).sum() + extra
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sums.add_(torch.cat([parts.detach(), extra.detach().view(1), total.detach().view(1)]))

        return step

    def _graphed(self, step, model, opt, train, specs, norm) -> Callable:
        """`step` captured as a CUDA graph, or `step` itself if capture fails (with a warning)."""
        bs = self.cfg.batch_size
        x0 = norm(train.x[:bs])
        y0 = {t: train.y[t][:bs] for t in specs}
        m0 = {t: m[:bs] for t, m in train.labelled.items() if t in specs}
        try:
            return GraphedStep(step, model, opt, x0, y0, m0)
        except RuntimeError as err:  # an op that cannot be captured: run eagerly instead
            warnings.warn(f"CUDA graph capture failed, training eagerly: {err}")
            return step

    def _use_graph(self, extra_loss) -> bool:
        return self.cuda and self.cfg.cuda_graph and self.cfg.optimizer in ("adam", "adamw") and extra_loss is None

    @staticmethod
    def _checked(sums: torch.Tensor) -> torch.Tensor:
        sums = sums.cpu()
        if not torch.isfinite(sums).all():
            raise Diverged(f"training loss is not finite ({sums[-1].item()}) in this epoch")
        return sums

    def _epoch_batches(self, train: Split, specs: dict[str, TaskSpec], data: TaskSet, norm, n: int):
        """A shuffled, augmented, normalised epoch of n images: (n, C, H, W), per-task targets and
        the label masks of partially labelled tasks."""
        perm = torch.randperm(len(train), device=self.device, generator=self.gen)[:n]
        masked = [t for t in specs if t in train.labelled]
        xs, ys = [], {t: [] for t in specs}
        for chunk in perm.split(AUGMENT_CHUNK):
            x, y = self._augment(train.x[chunk], {t: train.y[t][chunk] for t in specs}, specs, data)
            xs.append(norm(x))
            for t in specs:
                ys[t].append(y[t])
        return torch.cat(xs), {t: torch.cat(v) for t, v in ys.items()}, {t: train.labelled[t][perm] for t in masked}

    def _augment(self, x: torch.Tensor, y: dict[str, torch.Tensor], specs: dict[str, TaskSpec], data: TaskSet):
        cfg = self.cfg
        if cfg.crop_pad:
            x, dy, dx = random_crop(x, cfg.crop_pad, self.gen)
            y = {t: specs[t].crop_target(v, dy, dx, cfg.crop_pad) for t, v in y.items()}
        if cfg.flip:
            mask = torch.rand(len(x), device=x.device, generator=self.gen) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
            y = {t: specs[t].flip_target(v, mask, x.shape[-1]) for t, v in y.items()}
            if data.flip_labels is not None:
                y = data.flip_labels(y, mask)
        return x, y

    def normaliser(self, data: TaskSet) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 images -> the model's float input (also for inputs a strategy stores, e.g. replay)."""
        fmt = torch.channels_last if self.cuda else torch.contiguous_format
        dtype = torch.bfloat16 if self.cuda else torch.float32  # autocast casts to bf16 anyway

        def norm(x: torch.Tensor) -> torch.Tensor:
            return data.standardise(x).to(dtype).contiguous(memory_format=fmt)

        return norm

    def _outputs(self, model, data, split, specs) -> dict[str, torch.Tensor]:
        model.eval()
        norm, bs = self.normaliser(data), self.cfg.eval_batch_size
        chunks: dict[str, list[torch.Tensor]] = {t: [] for t in specs}
        tta = self.cfg.tta_flip and data.flip_labels is None  # a label-aware flip changes labels: no TTA
        for i in range(0, len(split), bs):
            x = split.x[i:i + bs]
            with self._autocast():
                out = model(norm(x))
                if tta:
                    mirrored = model(norm(x.flip(3)))
                    out = {t: (o.float() + specs[t].unflip_output(mirrored[t].float())) / 2
                           for t, o in out.items() if t in specs}
            for t in specs:
                chunks[t].append(out[t].float())
        return {t: torch.cat(c) for t, c in chunks.items()}

    # ---- settings ---------------------------------------------------------------------------
    def _autocast(self, cache: bool = True):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
        return torch.autocast("cpu", enabled=False)

    def _weight(self, task: str) -> float:
        return float(self.cfg.loss_weights.get(task, 1.0))

    def _optimizer(self, model: nn.Module, lr_factors: dict[str, float], capturable: bool = False) -> torch.optim.Optimizer:
        cfg = self.cfg

        def lr(factor: float):  # a graph replays with device-side learning rates it can read
            return torch.tensor(cfg.lr * factor, device=self.device) if capturable else cfg.lr * factor

        groups = [{"params": ps, "lr": lr(lr_factors.get(name, 1.0)), "name": name}
                  for name, ps in model.param_groups().items() if ps and lr_factors.get(name, 1.0) > 0]
        if cfg.optimizer == "sgd":
            kw = {"fused": True} if self.cuda else {"foreach": False}
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                                   weight_decay=cfg.weight_decay, **kw)
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        if capturable:
            kw = {"foreach": True, "capturable": True}
        else:
            kw = {"fused": True} if self.cuda else {"foreach": False}
        return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)

    def _schedule(self, total: int, per_epoch: int) -> Callable[[int], float]:
        cfg = self.cfg
        warm = max(1, int(cfg.warmup_epochs * per_epoch)) if cfg.warmup_epochs > 0 else 0

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if cfg.schedule == "constant":
                return 1.0
            progress = (step - warm) / max(1, total - warm)
            if cfg.schedule == "cosine":
                return 0.5 * (1 + math.cos(math.pi * progress))
            return max(0.0, 1 - progress)

        return factor

    def _epoch_row(self, epoch: int, stage: str, tasks: list[str], sums: torch.Tensor, steps: int, opt) -> dict:
        row = {"stage": stage, "epoch": epoch, "lr": float(opt.param_groups[0]["lr"])}
        names = [f"train_loss_{t}" for t in tasks] + ["train_loss_extra", "train_loss"]
        row.update({n: float(v) / steps for n, v in zip(names, sums.tolist())})
        return row

    def _selection_score(self, row: dict, specs: dict[str, TaskSpec]) -> float:
        if self.cfg.select == "loss":
            return -row["val_loss"]
        return float(np.mean([row[f"val_{t}_{s.primary}"] * (1 if s.higher_is_better else -1)
                              for t, s in specs.items()]))

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image random crop of a zero-padded batch back to its size. x: (B, C, H, W).

    Returns the cropped batch and the offsets dy, dx (B,) in [0, 2 * pad] of each crop in the
    padded image, for the task kinds to move their targets along."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols], dy, dx


def set_lr(opt: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    """Scale every group's base learning rate; tensor rates (CUDA graphs) are updated in place."""
    for group, base in zip(opt.param_groups, base_lrs):
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(base * factor)
        else:
            group["lr"] = base * factor


class GraphedStep:
    """A training step captured once as a CUDA graph and replayed: one launch instead of hundreds.

    Capture needs a few warm-up steps (they create gradients and optimizer state); their effect is
    undone afterwards, so training starts from the same weights as an eager run.
    """

    WARMUP = 3

    def __init__(self, step: Callable, model: nn.Module, opt: torch.optim.Optimizer,
                 x: torch.Tensor, y: dict[str, torch.Tensor], m: dict[str, torch.Tensor]):
        # static input buffers: batch, targets, label masks
        self.x, self.y, self.m = x.clone(), {t: v.clone() for t, v in y.items()}, {t: v.clone() for t, v in m.items()}
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                step(self.x, self.y, self.m)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        try:
            with torch.cuda.graph(self.graph):
                step(self.x, self.y, self.m)
        finally:
            _restore(model, opt, saved)

    def __call__(self, x: torch.Tensor, y: dict[str, torch.Tensor], m: dict[str, torch.Tensor]) -> None:
        self.x.copy_(x)
        for t, v in y.items():
            self.y[t].copy_(v)
        for t, v in m.items():
            self.m[t].copy_(v)
        self.graph.replay()


@torch.no_grad()
def _restore(model: nn.Module, opt: torch.optim.Optimizer, saved: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        v.copy_(saved[k])
    for state in opt.state.values():  # fresh optimizer: zero moments and step counts
        for v in state.values():
            if torch.is_tensor(v):
                v.zero_()
