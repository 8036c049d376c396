"""Group optimisation of a random layer sampling network (Lee, Lee, Kim and Ro 2021): every step samples K
networks and minimises the loss of their mean prediction (cross-entropy on the mean probability, or the
squared error of their Eq. 7); early stopping on the validation accuracy of N averaged sampled networks.
With ``train.adversarial`` each step's examples are made against the mean of the K networks it samples."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ensdef.data import Split
from ensdef.defenses.rls import RLSEnsemble, sampled_probs
from ensdef.models.rls import RLSNet
from ensdef.presets import AdversarialConfig, TrainConfig
from ensdef.rng import make_generator
from ensdef.training.adversarial import Criterion, LogProbs, adversarial_loss
from ensdef.training.loops import EpochHook, TrainResult, augment, fit
from ensdef.types import GroupLossKind as GroupLoss


def group_log_probs(net: RLSNet, paths: torch.Tensor) -> LogProbs:
    """``x -> log`` of the mean probability of the sampled networks ``paths`` ``[K, L]``: ``[B, K]``."""
    return lambda x: sampled_probs(net, x, paths).mean(0).clamp_min(1e-12).log()


def group_criterion(kind: GroupLoss) -> Criterion:
    """The group loss on the mean's log-probabilities: cross-entropy, or the squared error of their Eq. 7."""
    if kind is GroupLoss.CE_MEAN:
        return F.nll_loss
    return lambda lp, y: ((lp.exp() - F.one_hot(y, lp.shape[1]).to(lp)) ** 2).sum(1).mean()


def group_loss(
    net: RLSNet,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    kind: GroupLoss,
    g: torch.Generator,
    adversarial: AdversarialConfig | None = None,
) -> torch.Tensor:
    """The loss of the mean of ``k`` networks sampled from ``g``; with ``adversarial``, on examples made
    against that same mean (the sampled ensemble trained as a whole under attack)."""
    lp, crit = group_log_probs(net, net.sample_paths(k, g)), group_criterion(kind)
    if adversarial is None:
        return crit(lp(x), y)
    return adversarial_loss(net, lp, x, y, adversarial, g, crit)


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
        return group_loss(m, augment(xb, cfg.shift, cfg.rotate, g), yb, k, kind, g, cfg.adversarial)

    def val_acc(m: RLSNet) -> float:
        d = RLSEnsemble(m, n_eval).decide(val.x, make_generator(cfg.seed))
        m.train()
        return sum(dd.label == int(t) for dd, t in zip(d, val.y, strict=True)) / len(val)

    res = fit(net, train, cfg, loss, val_acc, desc, on_epoch)
    return TrainResult(res.model, {"val_accuracy": res.metrics["val_score"]}, res.epochs_run, res.seconds)
