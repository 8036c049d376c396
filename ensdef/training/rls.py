"""Group optimisation of a random layer sampling network (Lee, Lee, Kim and Ro 2021): every step samples K
networks and minimises the loss of their mean prediction (cross-entropy on the mean probability, or the
squared error of their Eq. 7); early stopping on the validation accuracy of N averaged sampled networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ensdef.data import Split
from ensdef.defenses.rls import RLSEnsemble, sampled_probs
from ensdef.models.rls import RLSNet
from ensdef.presets import TrainConfig
from ensdef.rng import make_generator
from ensdef.training.loops import EpochHook, TrainResult, augment, fit
from ensdef.types import GroupLossKind as GroupLoss


def group_loss(
    net: RLSNet, x: torch.Tensor, y: torch.Tensor, k: int, kind: GroupLoss, g: torch.Generator
) -> torch.Tensor:
    mean = sampled_probs(net, x, net.sample_paths(k, g)).mean(0)
    if kind is GroupLoss.CE_MEAN:
        return F.nll_loss(mean.clamp_min(1e-12).log(), y)
    return ((mean - F.one_hot(y, mean.shape[1]).to(mean)) ** 2).sum(1).mean()


def train_rls(
    net: RLSNet,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    k: int,
    kind: GroupLoss,
    n_eval: int = 10,
    desc: str = "rls",
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Group optimisation of ``net``; early stopping on the validation accuracy of N averaged samples."""

    def loss(m: RLSNet, xb: torch.Tensor, yb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return group_loss(m, augment(xb, cfg.shift, cfg.rotate, g), yb, k, kind, g)

    def val_acc(m: RLSNet) -> float:
        d = RLSEnsemble(m, n_eval).decide(val.x, make_generator(cfg.seed))
        m.train()
        return sum(dd.label == int(t) for dd, t in zip(d, val.y, strict=True)) / len(val)

    res = fit(net, train, cfg, loss, val_acc, desc, on_epoch)
    return TrainResult(res.model, {"val_accuracy": res.metrics["val_score"]}, res.epochs_run, res.seconds)
