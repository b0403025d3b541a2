"""The one training loop. Knows nothing of any dataset, model or strategy by name.

Data stays on the device as uint8; each epoch is shuffled and augmented on the device up front:
random crop with padding and horizontal flip (the task kinds move their targets along, the dataset's
label maps its labels) by a built-in fast path, or, when `train.augment` lists ops, all of them
through the kornia pipeline (bench/augment), seeded from the cell's generator. Each step slices a
batch, normalises it and runs under the cell's precision (bench/precision.py: autocast, and a
gradient scaler for fp16) with channels_last on CUDA. Losses come from the task kinds, each on the
items of the batch that carry its label; a weighting method (bench/weighting; `equal` by default,
and always for a single task) turns them into the step's gradients, its own parameters training in
one more optimizer group without weight decay. The learning rate follows the cell's schedule per
step (bench/schedules.py; plateau and early stopping act on the epoch's selection metric). The best
epoch is chosen on validation; its weights are restored before the test set is predicted once.

History columns per epoch: the mean unweighted training loss per task (`train_loss_<task>`), the
suite-weighted total (`train_loss`, the loss_weights' sum whatever the method), the method's mean
weight per task (`weight_<task>`; nan for aggregators that do not combine the task gradients
linearly), time in training steps (`train_seconds`, `step_ms`) and, when `grad_cosine_every` is
set, the mean cosine between each pair of task gradients (`grad_cos_<a>_vs_<b>`) with its cost
(`grad_cos_seconds`, not counted as training time).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from bench.augment import LABEL_KINDS, Pipeline, keep, shorthand_ops
from bench.settings import PluginConfig, TrainConfig
from bench.cuda_graph import GraphedStep
from bench.data import Split, TaskSet
from bench.kinds import TaskSpec
from bench.precision import backward_step, numerics
from bench.schedules import EarlyStopping, LrSchedule
from bench.weighting import Weighting, build, split_params
from bench.weighting.probe import CosineProbe

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
    def __init__(self, cfg: TrainConfig, device: torch.device, seed: int, on_epoch: EpochCallback | None = None,
                 weighting: PluginConfig | None = None):
        self.cfg = cfg
        self.device = device
        self.seed = seed
        self.on_epoch = on_epoch or (lambda row: None)
        self.cuda = device.type == "cuda"
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.numerics = numerics(cfg.precision, cfg.deterministic, device)
        self.graphed = False  # did any fit replay a captured CUDA graph (recorded with the numerics)
        self.weighting = weighting or PluginConfig(name="equal")  # a method of bench/weighting, per fit

    # ---- public API -------------------------------------------------------------------------
    def fit(self, model: nn.Module, data: TaskSet, specs: dict[str, TaskSpec], *,
            train: Split | None = None, epochs: int | None = None, extra_loss: ExtraLoss | None = None,
            lr_factors: dict[str, float] | None = None, stage: str = "", lr: float | None = None,
            freeze_norm: bool = False, monitor: dict[str, TaskSpec] | None = None) -> FitResult:
        """Train `model` on `train` (default: data.train) for the supervised losses of `specs`.

        The best epoch is the one with the best validation score (`select`: the loss-weighted sum
        of `specs`' validation losses, or their mean primary metric), the earliest on ties; its
        weights are restored before returning.
        lr_factors: `param_groups()` name or name prefix ("shared" covers "shared/neck") -> factor of
        the peak learning rate `lr` (default: the config's); 0 leaves a group out of the optimizer.
        freeze_norm: batch-norm layers normalise with their running statistics and keep them (their
        affine weights still train), so this fit's data cannot shift what earlier fits normalised with.
        monitor: more tasks the model predicts, scored on validation each epoch for the history only
        (a sequential stage's earlier tasks); they neither train nor select."""
        cfg, train = self.cfg, train if train is not None else data.train
        epochs = epochs or cfg.epochs
        steps_per_epoch = max(1, len(train) // cfg.batch_size)  # drop the ragged last batch
        images_per_epoch = min(steps_per_epoch * cfg.batch_size, len(train))  # a batch larger than train holds all of it
        augment = self._augmentation(data, specs)  # refuses an op the dataset declares no label map for
        method = self.method(list(specs))
        graph = self._use_graph(extra_loss) and method.graph_safe
        opt = self._optimizer(model, lr_factors or {}, capturable=graph, lr=cfg.lr if lr is None else lr,
                              method=method)
        higher = cfg.select == "score"  # the selection metric: val loss (lower is better) or score
        schedule = LrSchedule(opt, schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs, epochs=epochs,
                              steps_per_epoch=steps_per_epoch, plateau=cfg.plateau, higher_is_better=higher)
        stop = EarlyStopping(higher_is_better=higher, **cfg.early_stopping) if cfg.early_stopping else None
        norm = self.normaliser(data)
        tasks = len(specs)
        sums = torch.zeros(2 * tasks + 2, device=self.device)  # per-task losses, extra, total, per-task weights
        shared, specific = split_params(model)
        step = self._step_fn(self._losses_fn(model, specs, extra_loss, graph, method), opt, method, shared, specific,
                             sums)
        if graph:  # captured in training mode: the model may come in eval mode (a previous stage's evaluation)
            train_mode(model, freeze_norm)
            step = self._graphed(step, [model, method], opt, train, specs, norm)
        probe = self._probe(model, specs, shared) if cfg.grad_cosine_every and tasks > 1 and shared else None
        best, history, train_seconds = None, [], 0.0
        for epoch in range(1, epochs + 1):
            t0 = self._now()
            sums.zero_()
            self._train_epoch(model, train, specs, augment, norm, step, steps_per_epoch, freeze_norm,
                              lambda i, e=epoch: schedule.step((e - 1) * steps_per_epoch + i),
                              probe, (epoch - 1) * steps_per_epoch)
            cosines, probe_seconds = probe.end_epoch(list(specs)) if probe else ({}, 0.0)
            seconds = self._now() - t0 - probe_seconds
            train_seconds += seconds
            row = self._epoch_row(epoch, stage, list(specs), self._checked(sums, tasks), steps_per_epoch, opt)
            method.end_epoch(sums[:tasks] / steps_per_epoch)  # the epoch's mean unweighted losses (T,)
            if probe is not None:
                row.update(cosines, grad_cos_seconds=probe_seconds)
            row["train_seconds"] = seconds
            row["step_ms"] = 1000 * seconds / steps_per_epoch
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
            metric = score if higher else row["val_loss"]
            schedule.epoch_end(epoch, metric)
            if stop is not None and stop.update(metric):
                break
        model.load_state_dict(best[3])
        return FitResult(history=history, best_epoch=best[1], val_metrics=best[2],
                         train_seconds=train_seconds, images=len(history) * images_per_epoch)

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

    def method(self, tasks: list[str]) -> Weighting:
        """This fit's weighting method over `tasks`' loss weights; `equal` for a single task (some
        aggregators, e.g. cagrad and fairgrad, would rescale a lone gradient)."""
        cfg = self.weighting if len(tasks) > 1 else PluginConfig(name="equal")
        base = torch.tensor([self._weight(t) for t in tasks])
        method = build(cfg.name, cfg.params, base, seed=self.seed).to(self.device)
        method.jac_chunk = self.jac_chunk
        return method

    @property
    def jac_chunk(self) -> int | None:
        """Jacobian rows per backward pass: all T at once (torch.vmap) on CUDA; on CPU one at a time,
        which measured 1.6x faster (pcgrad on a narrow dual_stream, batch 64: 139 vs 219 ms of CPU)."""
        return None if self.cuda else 1

    def _probe(self, model: nn.Module, specs: dict[str, TaskSpec], shared: list[nn.Parameter]) -> CosineProbe:
        """The task-gradient cosine diagnostic: eager, on the task losses alone (no extra loss)."""
        losses = self._losses_fn(model, specs, None, graph=False)
        return CosineProbe(model, lambda xb, yb, mb: losses(xb, yb, mb)[0], shared, len(specs),
                           self.cfg.grad_cosine_every, self.device, self._now, chunk=self.jac_chunk)

    # ---- the hot loop -----------------------------------------------------------------------
    def _train_epoch(self, model, train, specs, augment, norm, step, steps, freeze_norm, set_step_lr,
                     probe=None, first=0) -> None:
        """One epoch of `steps` steps; `probe` (if any) sees each batch first, numbered from `first`."""
        train_mode(model, freeze_norm)
        bs = self.cfg.batch_size
        # Augment and normalise the whole epoch up front: a few large kernels instead of many
        # small ones per step; a step is then a slice, forward/backward and the update.
        x, y, m = self._epoch_batches(train, specs, augment, norm, steps * bs)
        for i in range(steps):
            set_step_lr(i)
            window = slice(i * bs, (i + 1) * bs)
            batch = (x[window], {t: v[window] for t, v in y.items()}, {t: v[window] for t, v in m.items()})
            if probe is not None:
                probe(first + i, *batch)
            step(*batch)

    def _losses_fn(self, model, specs, extra_loss, graph: bool, method: Weighting | None = None) -> Callable:
        """(xb, yb, mb) -> per-task losses (T,), the extra loss (or None) and the features the heads
        read (a list; None unless `method` uses them and the model has `forward_features`).

        yb: task -> targets; mb: task -> (B,) bool, which items carry that task's label (a task
        absent from mb is labelled on every item)."""
        tasks, smoothing = list(specs), self.cfg.label_smoothing
        # features only for a method that reads them; others get the plain forward (and its hooks)
        forward = getattr(model, "forward_features", None) if method is not None and method.uses_features else None

        def losses(xb: torch.Tensor, yb: dict[str, torch.Tensor], mb: dict[str, torch.Tensor]):
            # autocast's weight cache must be off under capture; an extra loss's own forward passes
            # (e.g. a teacher's) run under the same autocast as the model's
            with self._autocast(cache=not graph):
                out, features = forward(xb) if forward else (model(xb), None)
                extra = extra_loss(model, xb, out).float() if extra_loss else None
            parts = torch.stack([specs[t].loss(out[t], yb[t], label_smoothing=smoothing, labelled=mb.get(t))
                                 for t in tasks])
            return parts, extra, list(features.values()) if features else None

        return losses

    def _step_fn(self, losses, opt, method: Weighting, shared, specific, sums) -> Callable:
        """One optimisation step on a normalised batch; adds its losses and weights to `sums` on the device."""
        scaler = self.numerics.scaler()  # fp16 only (never graphed)

        def step(xb: torch.Tensor, yb: dict[str, torch.Tensor], mb: dict[str, torch.Tensor]) -> None:
            parts, extra, features = losses(xb, yb, mb)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                weights = method.backward(parts, shared, specific, features=features, extra=extra)  # (T,)
                opt.step()
            else:  # fp16 scales the one total loss: equal weights only (the grid refuses other methods)
                objective, weights = method.objective(parts)
                backward_step(objective if extra is None else objective + extra, opt, scaler)
            extra = parts.new_zeros(()) if extra is None else extra.detach()
            total = (parts.detach() * method.base).sum() + extra  # the suite's weighted loss, for the history
            sums.add_(torch.cat([parts.detach(), extra.view(1), total.view(1), weights.detach().to(sums.dtype)]))

        return step

    def _graphed(self, step, modules, opt, train, specs, norm) -> Callable:
        """`step` captured as a CUDA graph, or `step` itself if capture fails (with a warning)."""
        bs = self.cfg.batch_size
        x0 = norm(train.x[:bs])
        y0 = {t: train.y[t][:bs] for t in specs}
        m0 = {t: m[:bs] for t, m in train.labelled.items() if t in specs}
        try:
            graphed = GraphedStep(step, modules, opt, x0, y0, m0)
            self.graphed = True
            return graphed
        except RuntimeError as err:  # an op that cannot be captured: run eagerly instead
            warnings.warn(f"CUDA graph capture failed, training eagerly: {err}")
            return step

    def _use_graph(self, extra_loss) -> bool:
        return (self.cuda and self.cfg.cuda_graph and self.numerics.graph_safe and extra_loss is None
                and self.cfg.optimizer in ("adam", "adamw"))

    @staticmethod
    def _checked(sums: torch.Tensor, tasks: int) -> torch.Tensor:
        """`sums` on the host; Diverged when a loss is not finite (weights may be nan by design)."""
        sums = sums.cpu()
        if not torch.isfinite(sums[:tasks + 2]).all():
            raise Diverged(f"training loss is not finite ({sums[tasks + 1].item()}) in this epoch")
        return sums

    def _epoch_batches(self, train: Split, specs: dict[str, TaskSpec], augment, norm, n: int):
        """A shuffled, augmented, normalised epoch of n images: (n, C, H, W), per-task targets and
        the label masks of partially labelled tasks."""
        perm = torch.randperm(len(train), device=self.device, generator=self.gen)[:n]
        masked = [t for t in specs if t in train.labelled]
        xs, ys = [], {t: [] for t in specs}
        for chunk in perm.split(AUGMENT_CHUNK):
            x, y = augment(train.x[chunk], {t: train.y[t][chunk] for t in specs})
            xs.append(norm(x))
            for t in specs:
                ys[t].append(y[t])
        return torch.cat(xs), {t: torch.cat(v) for t, v in ys.items()}, {t: train.labelled[t][perm] for t in masked}

    def _augmentation(self, data: TaskSet, specs: dict[str, TaskSpec]) -> Callable:
        """(uint8 images, targets) -> augmented ones: the crop_pad / flip shorthands then `augment`'s ops.

        ValueError first for an orientation op a task of `specs` has no label map for (also checked
        when the suite loads, bench/grid.py)."""
        cfg, kinds = self.cfg, {t: s.kind for t, s in specs.items()}
        pipeline = Pipeline(shorthand_ops(cfg.crop_pad, cfg.flip) + list(cfg.augment), dataset=data.name,
                            label_maps=data.label_maps)
        pipeline.check(kinds)
        if cfg.augment:  # kornia: each call draws its seed from the cell's generator
            return lambda x, y: pipeline(x, y, kinds, generator=self.gen)
        return lambda x, y: self._crop_flip(x, y, specs, data)

    def _crop_flip(self, x: torch.Tensor, y: dict[str, torch.Tensor], specs: dict[str, TaskSpec], data: TaskSet):
        """The built-in fast path of the shorthands: random crop, then horizontal flip (4-5x kornia's speed)."""
        cfg = self.cfg
        if cfg.crop_pad:
            x, dy, dx = random_crop(x, cfg.crop_pad, self.gen)
            y = {t: specs[t].crop_target(v, dy, dx, cfg.crop_pad) for t, v in y.items()}
        if cfg.flip:
            mask = torch.rand(len(x), device=x.device, generator=self.gen) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
            y = {t: specs[t].flip_target(v, mask, x.shape[-1]) for t, v in y.items()}  # geometry: the kind's
            y = {t: data.label_maps[t]["hflip"](v, mask) if specs[t].kind in LABEL_KINDS else v  # labels: the dataset's
                 for t, v in y.items()}
        return x, y

    def normaliser(self, data: TaskSet) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 images -> the model's float input (also for inputs a strategy stores, e.g. replay)."""
        fmt = torch.channels_last if self.cuda else torch.contiguous_format
        dtype = self.numerics.dtype if self.cuda else torch.float32  # autocast would cast to it anyway

        def norm(x: torch.Tensor) -> torch.Tensor:
            return data.standardise(x).to(dtype).contiguous(memory_format=fmt)

        return norm

    def _outputs(self, model, data, split, specs) -> dict[str, torch.Tensor]:
        model.eval()
        norm, bs = self.normaliser(data), self.cfg.eval_batch_size
        chunks: dict[str, list[torch.Tensor]] = {t: [] for t in specs}
        tta = self.cfg.tta_flip and self._flip_keeps_labels(data, specs)
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

    @staticmethod
    def _flip_keeps_labels(data: TaskSet, specs: dict[str, TaskSpec]) -> bool:
        """Flip TTA averages over mirrors: only where every label task declares that a mirror keeps its label."""
        return all(data.label_maps.get(t, {}).get("hflip") is keep for t, s in specs.items() if s.kind in LABEL_KINDS)

    # ---- settings ---------------------------------------------------------------------------
    def _autocast(self, cache: bool = True):
        return self.numerics.autocast(cache)

    def _weight(self, task: str) -> float:
        return float(self.cfg.loss_weights.get(task, 1.0))

    def _optimizer(self, model: nn.Module, lr_factors: dict[str, float], capturable: bool = False,
                   lr: float | None = None, method: Weighting | None = None) -> torch.optim.Optimizer:
        cfg = self.cfg
        peak = cfg.lr if lr is None else lr

        def group_lr(factor: float):  # a graph replays with device-side learning rates it can read
            return torch.tensor(peak * factor, device=self.device) if capturable else peak * factor

        factors = {name: group_factor(name, lr_factors) for name in model.param_groups()}
        groups = [{"params": ps, "lr": group_lr(factors[name]), "name": name}
                  for name, ps in model.param_groups().items() if ps and factors[name] > 0]
        own = [p for p in method.parameters() if p.requires_grad] if method is not None else []
        if own:  # learned log-variances, GradNorm's weights: no decay pulling them to 0
            groups.append({"params": own, "lr": group_lr(1.0), "name": "weighting", "weight_decay": 0.0})
        if cfg.optimizer == "sgd":
            kw = {"fused": True} if self.cuda else {"foreach": False}
            return torch.optim.SGD(groups, lr=peak, momentum=cfg.momentum, nesterov=True,
                                   weight_decay=cfg.weight_decay, **kw)
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        if capturable:
            kw = {"foreach": True, "capturable": True}
        else:
            kw = {"fused": True} if self.cuda else {"foreach": False}
        return cls(groups, lr=peak, weight_decay=cfg.weight_decay, **kw)

    def _epoch_row(self, epoch: int, stage: str, tasks: list[str], sums: torch.Tensor, steps: int, opt) -> dict:
        row = {"stage": stage, "epoch": epoch, "lr": float(opt.param_groups[0]["lr"])}
        names = [f"train_loss_{t}" for t in tasks] + ["train_loss_extra", "train_loss"] + [f"weight_{t}" for t in tasks]
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


def train_mode(model: nn.Module, freeze_norm: bool = False) -> None:
    """model.train(), with its batch-norm layers left in eval mode when `freeze_norm`."""
    model.train()
    if freeze_norm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def group_factor(name: str, factors: dict[str, float]) -> float:
    """The learning-rate factor of parameter group `name`: the entry for the name itself, else for its
    longest "/"-prefix ("shared/late" -> "shared"), else 1.0."""
    parts = name.split("/")
    for k in range(len(parts), 0, -1):
        prefix = "/".join(parts[:k])
        if prefix in factors:
            return float(factors[prefix])
    return 1.0


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
