"""Diversity of a pool: pairwise Cohen kappa on negative examples (MODEF Eq. 3), the kappa matrix, the
interrater-agreement score (Kuncheva & Whitaker; Lee et al. 2021 Table 5), and kappa-ranked team enumeration."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ensdef.errors import ConfigError


def negative_mask(preds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``preds`` ``[M, N]`` labels of M members, ``y`` ``[N]``: True where at least one member is wrong."""
    return (np.asarray(preds) != np.asarray(y)[None, :]).any(axis=0)


def cohen_kappa(a: np.ndarray, b: np.ndarray, num_classes: int | None = None) -> float:
    """Cohen's kappa between two label vectors ``[N]`` (MODEF Eq. 3). 1.0 when both are constant and equal."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"label vectors must be 1-D and of equal length, got {a.shape} and {b.shape}")
    if a.size == 0:
        return float("nan")
    k = int(max(a.max(), b.max()) + 1) if num_classes is None else num_classes
    cm = np.bincount(a * k + b, minlength=k * k).reshape(k, k).astype(np.float64) / a.size
    po = np.trace(cm)
    pe = float(cm.sum(1) @ cm.sum(0))
    if math.isclose(pe, 1.0):
        return 1.0 if math.isclose(po, 1.0) else 0.0
    return float((po - pe) / (1.0 - pe))


def kappa_matrix(preds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[M, M]`` pairwise kappa on the pool's negative examples (MODEF Table VII); diagonal 1."""
    preds = np.asarray(preds)
    neg = negative_mask(preds, y)
    sub = preds[:, neg]
    m = preds.shape[0]
    out = np.ones((m, m))
    for i, j in itertools.combinations(range(m), 2):
        out[i, j] = out[j, i] = cohen_kappa(sub[i], sub[j])
    return out


def interrater_agreement(preds: np.ndarray, y: np.ndarray) -> float:
    """Kuncheva-Whitaker interrater agreement of ``preds`` ``[L, N]`` on oracle (correct/wrong) outputs.

    ``1 - (1/L) sum_j l_j (L - l_j) / (N (L - 1) p (1 - p))`` with ``l_j`` members right on example j and
    ``p`` the mean member accuracy. Lower means more diverse; 1 when all members agree on every example.
    """
    correct = np.asarray(preds) == np.asarray(y)[None, :]
    num_members, n = correct.shape
    l = correct.sum(0)
    p = correct.mean()
    if num_members < 2 or p in (0.0, 1.0):
        return 1.0
    return float(1.0 - (l * (num_members - l)).sum() / num_members / (n * (num_members - 1) * p * (1 - p)))


@dataclass(frozen=True)
class RankedTeams:
    """Teams as index arrays padded with -1 (``teams`` ``[T, max_size]``), ``mean_kappa`` ``[T]``,
    sorted by ascending mean kappa."""

    teams: np.ndarray
    mean_kappa: np.ndarray

    def __len__(self) -> int:
        return int(self.teams.shape[0])

    def team(self, i: int) -> tuple[int, ...]:
        row = self.teams[i]
        return tuple(int(v) for v in row[row >= 0])


def _combinations(n: int, k: int) -> np.ndarray:
    count = math.comb(n, k)
    flat = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), k)), np.int16, count * k)
    return flat.reshape(count, k)


def rank_teams(kappa: np.ndarray, min_size: int = 3, max_size: int = 5, threshold: float = 1.0) -> RankedTeams:
    """Every team of size ``min_size..max_size`` with mean pairwise kappa below ``threshold``, sorted.

    Vectorised: pair sums are gathered from ``kappa`` for all teams of a size at once.
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    n = kappa.shape[0]
    if not 2 <= min_size <= max_size <= n:
        raise ConfigError(f"team sizes must satisfy 2 <= {min_size} <= {max_size} <= pool size {n}")
    teams, scores = [], []
    for k in range(min_size, max_size + 1):
        combos = _combinations(n, k)
        total = np.zeros(len(combos))
        for i, j in itertools.combinations(range(k), 2):
            total += kappa[combos[:, i], combos[:, j]]
        mean = total / math.comb(k, 2)
        keep = mean < threshold
        padded = np.full((int(keep.sum()), max_size), -1, dtype=np.int16)
        padded[:, :k] = combos[keep]
        teams.append(padded)
        scores.append(mean[keep])
    all_teams, all_scores = np.concatenate(teams), np.concatenate(scores)
    order = np.argsort(all_scores, kind="stable")
    return RankedTeams(all_teams[order], all_scores[order])
