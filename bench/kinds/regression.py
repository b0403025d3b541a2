"""The `regression` kind: `dim` real outputs per item.

Targets and predictions: (N, dim) float32. Loss: MSE. Metrics: MAE (primary, lower is better)
and RMSE, over items and output dimensions. Distillation: MSE to the teacher's outputs.
"""

from __future__ import annotations

import numpy as np

from bench.kinds import RAW, FeatureInfo, TaskSpec, masked_mean, register


@register("regression")
class Regression(TaskSpec):
    primary = "mae"
    lower_is_better = frozenset({"loss", "mae", "rmse"})
    columns = (("mae", "MAE"), ("rmse", "RMSE"))
    display = RAW
    panels = frozenset({"residuals", "hardest"})

    @property
    def out_channels(self) -> int:
        return self.dim

    def head(self, features: FeatureInfo, **cfg):
        from bench.kinds.heads import mlp_head

        return mlp_head(features, self.out_channels, **cfg)

    def loss(self, out, target, *, label_smoothing=0.0, labelled=None):
        import torch.nn.functional as F

        out = out.float()
        if labelled is None:
            return F.mse_loss(out, target.float().view_as(out))
        per_item = F.mse_loss(out, target.float().view_as(out), reduction="none").flatten(1).mean(1)
        return masked_mean(per_item, labelled)

    def to_prediction(self, out):
        return out.float()

    def distill(self, student, teacher, temperature=2.0):
        import torch.nn.functional as F

        return F.mse_loss(student.float(), teacher.float().detach())  # temperature unused

    def unflip_output(self, out):
        return out

    def metrics(self, pred, target):
        err = pred.reshape(len(pred), -1) - target.reshape(len(target), -1)
        return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}

    def item_losses(self, pred, target):
        """Squared error averaged over the output dimensions, as the MSE loss."""
        pred = pred.astype(np.float64).reshape(len(pred), -1)
        return ((pred - target.astype(np.float64).reshape(len(target), -1)) ** 2).mean(1)

    def combine(self, preds):
        return np.mean([p.astype(np.float64) for p in preds], axis=0).astype(np.float32)

    def describe(self, value, predicted=False):
        return ", ".join(f"{v:.2f}" for v in np.ravel(value)[:3])
