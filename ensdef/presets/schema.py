"""The preset schema: which pools to train, with which architectures and settings, and how to evaluate them.
Typed, frozen dataclasses; :func:`ensdef.presets.load_preset` builds them strictly from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ensdef.config import from_mapping, to_plain
from ensdef.errors import ConfigError
from ensdef.noise import NoiseKind
from ensdef.types import (
    AdvMethod,
    Checkpoint,
    CrossLayerMode,
    DataShare,
    GroupLossKind,
    OnDisagree,
    Optim,
    TeamPolicy,
    VoteRule,
)


@dataclass(frozen=True)
class AdversarialConfig:
    """Adversarial training at L-inf ``eps`` (``ensdef.training.adversarial``): every training batch is replaced
    by (PGD, FGSM-RS) or paired with (TRADES) examples of ``steps`` signed-gradient steps of ``step_size`` from
    a random start, made on the model being trained (with its training noise and temperature); with ``ratio``
    < 1 only that share of every batch is replaced and the rest stays clean (PGD, FGSM-RS: ART's
    ``AdversarialTrainer`` ratio, half in Goodfellow, Shlens and Szegedy 2015, "Explaining and harnessing
    adversarial examples", and in the MODEF baseline). Early stopping
    then keeps the epoch with the best accuracy under ``val_steps``-step PGD on the validation split (Rice,
    Wong and Kolter 2020, "Overfitting in adversarially robust deep learning"; 0: clean accuracy)."""

    method: AdvMethod = AdvMethod.PGD
    eps: float = 0.3
    steps: int = 7  # fgsm-rs: 1
    step_size: float = 0.1  # fgsm-rs: 1.25 eps (Wong et al.)
    beta: float = 6.0  # TRADES: weight of the KL term (Zhang et al.: 6 on MNIST and CIFAR-10)
    val_steps: int = 10
    ratio: float = 1.0  # share of every batch replaced by examples (pgd, fgsm-rs); the rest stays clean

    def __post_init__(self) -> None:
        if self.eps <= 0 or self.step_size <= 0 or self.steps < 1 or self.val_steps < 0 or self.beta < 0:
            raise ConfigError(
                "train.adversarial: eps and step_size must be > 0, steps >= 1, val_steps >= 0 and beta >= 0"
            )
        if not 0 < self.ratio <= 1 or (self.method is AdvMethod.TRADES and self.ratio != 1):
            raise ConfigError(
                f"train.adversarial: ratio must be in (0, 1] (1 for trades, which pairs every image), got {self.ratio}"
            )
        if self.method is AdvMethod.FGSM_RS and self.steps != 1:
            raise ConfigError(f"train.adversarial: fgsm-rs takes one step (steps: 1), got steps: {self.steps}")


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained. ``temperature`` divides the logits in the loss (Liang and Samavi 2021)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: Optim = Optim.ADAM
    momentum: float = 0.9
    weight_decay: float = 0.0
    cosine: bool = True  # cosine learning-rate decay over ``epochs``
    patience: int = 5  # early stopping: epochs without a better validation score
    checkpoint: Checkpoint = Checkpoint.BEST
    shift: int = 0  # random translation augmentation, in pixels
    rotate: float = 0.0  # random rotation augmentation, in degrees
    temperature: float = 1.0
    noise_sigma: float = 0.0  # Gaussian noise augmentation (x + sigma N(0, 1), unclipped), as for smoothing
    clean_fraction: float = 0.0  # with noise_sigma: share of training images (drawn per image) left clean
    adversarial: AdversarialConfig | None = None  # None: no adversarial training
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA when present

    def __post_init__(self) -> None:
        if not 0.0 <= self.clean_fraction < 1.0:
            raise ConfigError(f"train.clean_fraction must be in [0, 1), got {self.clean_fraction}")


@dataclass(frozen=True)
class ClassifierSpec:
    architecture: str
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class VerifierPool:
    architectures: tuple[str, ...]
    train: TrainConfig = field(default_factory=TrainConfig)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # architecture -> TrainConfig fields

    def train_for(self, architecture: str) -> TrainConfig:
        """The pool's training config with ``overrides[architecture]`` applied (keys checked)."""
        ov = self.overrides.get(architecture, {})
        return from_mapping(TrainConfig, {**to_plain(self.train), **ov}, f"verifiers.overrides.{architecture}")


def _check_autoencoder_train(train: TrainConfig, where: str) -> None:
    """Autoencoders train without labels: their adversarial examples ascend the reconstruction error (PGD,
    FGSM-RS); TRADES' KL between class distributions has nothing to compare. ``where``: the config's path."""
    if train.adversarial is not None and train.adversarial.method is AdvMethod.TRADES:
        raise ConfigError(f"{where}.adversarial: autoencoders take pgd or fgsm-rs, not trades")


@dataclass(frozen=True)
class DenoiserMember:
    architecture: str
    noise: NoiseKind
    level: float


@dataclass(frozen=True)
class DenoiserPool:
    members: tuple[DenoiserMember, ...]
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check_autoencoder_train(self.train, "denoisers.train")


@dataclass(frozen=True)
class ReformerPool:
    architectures: tuple[str, ...]
    noise_sigma: float = 0.1  # Gaussian noise the reformers are trained on (DeT)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check_autoencoder_train(self.train, "reformers.train")


@dataclass(frozen=True)
class TempnetPool:
    count: int = 10  # m
    base_temperature: float = 10.0  # T_l = base * l
    data: DataShare = DataShare.ALL
    architecture: str = "tempnet"
    train: TrainConfig = field(default_factory=TrainConfig)
    # a warm start: one network (``tempnet-init``) trained first with this config on the whole training split,
    # every member then trains ``train`` at its own temperature from its weights (None: each from scratch, as
    # in the paper)
    warm_start: TrainConfig | None = None


@dataclass(frozen=True)
class RLSPool:
    """Lee et al. 2021: M sub-models per backbone, K sampled networks per training step, N at inference."""

    backbones: tuple[str, ...] = ("vgg",)
    m: int = 2
    k: int = 3
    n: int = 10
    loss: GroupLossKind = GroupLossKind.CE_MEAN
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(lr=0.01, optimizer=Optim.SGD, momentum=0.9, weight_decay=5e-4)
    )


@dataclass(frozen=True)
class DeTConfig:
    """Li et al. 2019: noise, preliminary reformer, hypercube samples, cross-training and list selection."""

    sigma: float = 0.1  # Gaussian noise before the preliminary reformer
    eps: float = 0.1  # hypercube sampling scale around the preliminary reconstruction
    samples: int = 10  # n hypercube samples per input
    surrogate_samples: int = 1  # hypercube samples per EOT draw of the attack surrogate (ensdef.defenses.det)
    list_size: int = 3
    preliminary: str = "reformer-reformer_conv"
    cross_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, batch_size=256))
    max_accuracy_drop: float = 0.02  # list members keep classifier o R within this of the classifier alone
    attack_images: int = 50  # L2 examples per reformer for the transferability matrix
    transfer_attack: str = "cw_l2"  # "cw_l2" (the paper's) or "pgd_l2"
    cw_confidence: float = 0.0
    cw_max_iter: int = 50  # iterations of either attack
    l2_eps: float = 2.0  # pgd_l2 budget

    def __post_init__(self) -> None:
        _check_autoencoder_train(self.cross_train, "det.cross_train")


@dataclass(frozen=True)
class ModefConfig:
    """MODEF team selection and voting (Chow et al. 2019)."""

    min_team: int = 3
    max_team: int = 5
    kappa_threshold: float = 0.8  # teams with mean pairwise kappa below this form the kappa-ranked list
    policy: TeamPolicy = TeamPolicy.RAND_KAPPA
    vote: VoteRule = VoteRule.SOFT
    on_disagree: OnDisagree = OnDisagree.REPAIR
    cross_layer: CrossLayerMode = CrossLayerMode.MANY_TO_MANY
    consensus: float = 0.5  # many-to-many: flagged unless more than this fraction of versions agree
    # the kappa matrix of team selection on adversarial examples (diversity where it matters): 0 keeps MODEF's
    # clean validation images; > 0 uses L-inf PGD examples of them at this budget, made on each verifier in turn
    # (``kappa_steps`` steps of 2.5 eps / steps from the image), every verifier scored on all of them
    kappa_eps: float = 0.0
    kappa_steps: int = 10


@dataclass(frozen=True)
class NoisyVoteConfig:
    """Liang and Samavi 2021: query-time noise, rank verification and certification."""

    sigma: float = 0.5  # per-member query noise (MNIST 0.5, CIFAR-10 0.03)
    alpha_rv: float = 0.05  # rank verification: p >= alpha_rv abstains
    rank_verification: bool = True
    n0: int = 100  # certification: selection samples
    n: int = 1000  # certification: estimation samples
    alpha: float = 0.001  # certification: failure probability of the Clopper-Pearson bound
    batch_size: int = 500  # noisy samples per forward pass


@dataclass(frozen=True)
class BaselineConfig:
    """MODEF Table V baselines of the target architecture, trained with ART (``ensdef train --pool baselines``)."""

    methods: tuple[str, ...] = ("adv-training", "distillation")
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    adv_eps: float = 0.3  # PGD adversarial training budget (L-inf)
    adv_eps_step: float = 0.1
    adv_max_iter: int = 7
    adv_ratio: float = 0.5  # fraction of every batch replaced by PGD examples
    temperature: float = 50.0  # defensive distillation
    seed: int = 11


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation harness (``ensdef evaluate``): attack set, threat models and their budgets.

    ``budgets`` overrides the registry's parameters per attack name (e.g. fewer C&W iterations on CPU)."""

    defenses: tuple[str, ...] = (
        "target",
        "adv-training",
        "distillation",
        "denoising",
        "verification",
        "modef-1tm",
        "modef-mtm",
        "noisy-vote",
        "rls",
        "det",
    )
    static_attacks: tuple[str, ...] = (
        "fgsm",
        "bim",
        "cw_linf_ml",
        "cw_linf_ll",
        "cw_l2_ml",
        "cw_l2_ll",
        "cw_l0_ml",
        "cw_l0_ll",
        "jsma_ml",
        "jsma_ll",
        "deepfool",
        "pgd",
        "ead",
    )
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_class: int = 10  # attack set: first N correctly classified test images per class (MODEF: 10)
    benign_n: int = 1000  # benign rows use the first benign_n test images
    seed: int = 0
    graybox_attack: str = "pgd"
    adaptive_attack: str = "pgd"  # through the EOT surrogate, with a detector-aware target
    adaptive_iter: int = 20
    eot: int = 20  # surrogate samples per gradient step for randomized defenses
    eps_curve: tuple[float, ...] = (0.1, 0.2, 0.3)  # adaptive robust accuracy against L-inf epsilon
    superimpose: tuple[int, ...] = (2, 3)  # Liang and Samavi 2021: superimposed single-member examples
    rls_samples: tuple[int, ...] = (1, 5, 10, 15)  # Lee et al. 2021 Table 4: attack the mean of n sampled networks
    blackbox_attack: str = "square"  # gradient-masking check
    blackbox_iter: int = 100
    # AutoAttack-grade adaptive cells (Croce and Hein 2020) through the EOT surrogate: APGD with cross-entropy,
    # and targeted APGD with the DLR loss at each of the ``apgd_targets`` most likely wrong classes
    apgd_iter: int = 100
    apgd_restarts: int = 1
    apgd_targets: int = 3
    # a query-only attacker on the served decisions (HopSkipJump; 0 iterations: no such cell)
    decision_iter: int = 10
    decision_evals: int = 200  # gradient-estimation queries per iteration
    # ARC (Dbouk and Shanbhag 2022) on randomized defenses: ``arc_draws`` fixed draws of the defense's surrogate
    # as its equally likely members, ``arc_iter`` sweeps over them of step eps / 4 (0 draws: no such cell)
    arc_draws: int = 10
    arc_iter: int = 20
    # the attack cascade (Croce and Hein 2020): APGD and the query-only attackers run only on the images no
    # earlier cell broke within the budget (the worst case per image is unchanged; ensdef.evaluation.cascade);
    # false: every attack on every image, each cell its own attack's figure
    cascade: bool = True
    # per defense, smaller adaptive budgets where the full ones do not fit the machine (keys: PER_DEFENSE);
    # every cell reports the budget it ran with, and the report lists the defenses whose budgets were cut
    per_defense: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_defense(self, name: str) -> EvalConfig:
        """This config with ``per_defense[name]`` applied (itself when the defense has no override)."""
        more = self.per_defense.get(name)
        return replace(self, **more) if more else self


PER_DEFENSE = (
    "adaptive_iter",
    "eot",
    "apgd_iter",
    "apgd_restarts",
    "apgd_targets",
    "decision_iter",
    "decision_evals",
    "blackbox_iter",
    "arc_draws",
    "arc_iter",
)


@dataclass(frozen=True)
class SweepConfig:
    """An ASHA hyper-parameter sweep over one pool: ``space`` maps TrainConfig fields to a range
    (``{loguniform: [lo, hi]}``, ``{uniform: [lo, hi]}`` or ``{choice: [...]}``), ``samples`` per member."""

    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: int = 4
    grace_period: int = 2  # epochs before ASHA may stop a trial
    reduction_factor: int = 2


@dataclass(frozen=True)
class TeamSweepConfig:
    """The Tune grid over MODEF's team selection, scored by validation DSR on a transfer-attack set."""

    sizes: tuple[tuple[int, int], ...] = ((3, 5),)  # (min_team, max_team) pairs
    thresholds: tuple[float, ...] = (0.6,)
    policies: tuple[TeamPolicy, ...] = (TeamPolicy.RAND_KAPPA,)
    modes: tuple[CrossLayerMode, ...] = (CrossLayerMode.ONE_TO_MANY, CrossLayerMode.MANY_TO_MANY)
    attack: str = "fgsm"  # transfer attack on the target, cached in the store
    images: int = 100  # validation images attacked (and as many benign ones)
    seed: int = 0


@dataclass(frozen=True)
class TuneResources:
    """Ray Tune settings: resources per trial (fractions allowed), concurrency, sweeps and the team grid."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    resources_per_trial: dict[str, float] = field(default_factory=dict)  # custom resources, e.g. {"gpu_slot": 0.1}
    max_concurrent: int = 0  # 0: as many as the resources allow
    sweeps: dict[str, SweepConfig] = field(default_factory=dict)  # pool name -> sweep
    teams: TeamSweepConfig = field(default_factory=TeamSweepConfig)


@dataclass(frozen=True)
class Preset:
    name: str
    dataset: str
    target: ClassifierSpec
    verifiers: VerifierPool
    denoisers: DenoiserPool
    reformers: ReformerPool
    tempnets: TempnetPool
    modef: ModefConfig = field(default_factory=ModefConfig)
    noisy_vote: NoisyVoteConfig = field(default_factory=NoisyVoteConfig)
    rls: RLSPool = field(default_factory=RLSPool)
    det: DeTConfig = field(default_factory=DeTConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    tune: TuneResources = field(default_factory=TuneResources)
    data_root: str | None = None
    # fine-tuning: a store whose member of the same name (and architecture) each member starts from instead of
    # its random initialisation (``ensdef.training.pools.finetuned``); None: every member from scratch
    finetune_from: str | None = None
