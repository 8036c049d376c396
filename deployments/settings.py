"""Serve settings: the ``args`` of the application in a Serve config YAML (``serve deploy``) or of
``ensdef serve``, parsed into typed dataclasses. Unknown keys are errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from ensdef.errors import ConfigError
from ensdef.guard.keys import ApiKeys
from ensdef.guard.quota import Quotas, QuotaSpec
from ensdef.guard.stateful import DetectorSpec, Encoding


class Packing(str, Enum):
    NONE = "none"  # one deployment per member: the cluster layout (one actor per model)
    POOL = "pool"  # one deployment per pool (role) hosting all its members: small machines
    INGRESS = "ingress"  # every member in the ingress replica itself (no member actors): the smallest machines


INGRESS_HOST = "ingress"  # the host name of members packed into the ingress replica


@dataclass(frozen=True)
class MemberOptions:
    """Replica options of a member deployment. ``resources`` are Ray custom resources (node pinning)."""

    num_cpus: float = 0.1
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    num_replicas: int = 1
    max_batch_size: int = 64  # requests merged by @serve.batch
    # how long @serve.batch waits for more calls before a pass: 0 runs what has queued at once (the router
    # already coalesces concurrent requests' calls; while a pass runs, later calls queue for the next one);
    # 0 against 2 ms on the 2-core machine: target p50 10.6-13.2 against 13.9-14.9 ms, throughput alike
    batch_wait_timeout_s: float = 0.0
    max_pass_images: int = 256  # images per forward pass (a merged batch is split): bounds im2col and activation memory
    # torch intra-op threads of the replica; 0 keeps Ray's default (OMP_NUM_THREADS = num_cpus, at least 1). On a
    # small machine a packed pool replica with fractional num_cpus computes on one core unless given more here.
    threads: int = 0

    def actor_options(self, gpu_as: str = "") -> dict[str, Any]:
        """Ray actor options; with ``gpu_as`` the GPU request becomes a request for that custom resource (the
        same fractional placement on a cluster without GPUs)."""
        out: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": 0.0 if gpu_as else self.num_gpus}
        resources = dict(self.resources)
        if gpu_as and self.num_gpus > 0:
            resources[gpu_as] = resources.get(gpu_as, 0.0) + self.num_gpus
        if resources:
            out["resources"] = resources
        return out


class Action(str, Enum):
    """What a detection does to the client, for ``cooldown_s`` after it."""

    OFF = "off"  # no detection at all
    LOG = "log"  # a metric and a log line only
    FLAG = "flag"  # every answer to the client is flagged
    THROTTLE = "throttle"  # every request of the client waits ``throttle_s`` first
    REFUSE = "refuse"  # the client is refused (403 / PERMISSION_DENIED with Retry-After)


@dataclass(frozen=True)
class DetectionSettings:
    action: Action = Action.LOG
    k: int = 50
    memory: int = 1000
    ttl_s: float = 3600.0
    max_clients: int = 256
    encoding: Encoding = Encoding.POOLED
    threshold: float = 0.0  # 0: calibrated when the application is built (benign streams, training split)
    fpr: float = 0.001  # calibration: the share of benign clients the threshold may flag
    margin: float = 0.5  # calibration: the threshold is this fraction of that benign score
    cooldown_s: float = 600.0
    throttle_s: float = 2.0

    def spec(self) -> DetectorSpec:
        return DetectorSpec(self.k, self.memory, self.ttl_s, self.max_clients, self.encoding)


@dataclass(frozen=True)
class GuardSettings:
    """``api_keys``: client name -> SHA-256 hex of its key (``ensdef serve-key`` makes one); with keys, requests
    without a valid one get 401. ``quota`` for every client, ``quota_overrides`` by client name."""

    api_keys: dict[str, str] = field(default_factory=dict)
    quota: QuotaSpec = field(default_factory=QuotaSpec)
    quota_overrides: dict[str, QuotaSpec] = field(default_factory=dict)
    max_client_series: int = 50  # clients with a metrics series of their own; the rest share ``other``
    series_min_images: int = 100  # images a client sends before it gets its own series
    max_tracked_clients: int = 100_000
    detection: DetectionSettings = field(default_factory=DetectionSettings)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GuardSettings:
        d = dict(_known(cls, d or {}, "guard settings"))
        if "quota" in d:
            d["quota"] = QuotaSpec(**_known(QuotaSpec, d["quota"], "guard.quota settings"))
        if "quota_overrides" in d:
            over = d["quota_overrides"]
            d["quota_overrides"] = {
                k: QuotaSpec(**_known(QuotaSpec, v, f"quota settings of {k}")) for k, v in over.items()
            }
        if "detection" in d:
            det = dict(_known(DetectionSettings, d["detection"], "guard.detection settings"))
            if "action" in det:
                det["action"] = Action(det["action"])
            if "encoding" in det:
                det["encoding"] = Encoding(det["encoding"])
            d["detection"] = DetectionSettings(**det)
        out = cls(**d)
        ApiKeys(out.api_keys), Quotas(out.quota, out.quota_overrides)  # fail at start, not on the first request
        out.detection.spec()
        return out


def _known(cls: type, d: Any, where: str) -> dict[str, Any]:
    if isinstance(d, cls):
        return {f.name: getattr(d, f.name) for f in fields(cls)}
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping")
    known = {f.name for f in fields(cls)}
    if unknown := sorted(set(d) - known):
        raise ConfigError(f"unknown {where} {unknown}; known: {sorted(known)}")
    return d


@dataclass(frozen=True)
class ServeSettings:
    preset: str = "mnist5k"
    store: str = "artifacts"
    defenses: tuple[str, ...] = ()  # empty: every registered defense whose artifacts are in the store
    packing: Packing = Packing.POOL
    unpacked: tuple[str, ...] = ()  # roles or member names that get one deployment per member even when packed
    members: MemberOptions = field(default_factory=MemberOptions)
    overrides: dict[str, MemberOptions] = field(default_factory=dict)  # by member name or role (pool name)
    # Serve's default of 5 makes callers poll with backoff under load (throughput collapses at concurrency 32);
    # members batch internally (@serve.batch), so every replica accepts many requests at once
    max_ongoing_requests: int = 256
    # the ingress only parses and awaits (async): slow clients may hold many of its slots while the body
    # arrives, so it takes more at once than the members do
    ingress_max_ongoing_requests: int = 512
    # admission control: requests queued at a proxy beyond this get an immediate 503 with Retry-After (gRPC
    # RESOURCE_EXHAUSTED) instead of waiting out the deadline behind a saturated ingress (Serve's backpressure)
    ingress_max_queued_requests: int = 256
    max_client_requests: int = 64  # concurrent HTTP requests per client address (429 above; per ingress replica)
    router_num_cpus: float = 0.05  # router deployments (packing none; packed, the ingress routes)
    ingress_num_cpus: float = 0.05
    control_resources: dict[str, float] = field(default_factory=dict)  # routers and ingress (e.g. {"head": 0.01})
    deadline_s: float = 10.0  # per request, over every fan-out stage
    quorum: float = 0.5  # more than this fraction of a stage's voters must answer
    # calls a router keeps outstanding per member host; concurrent requests' jobs queue behind them and go
    # together in the next call (at most host_call_images images), which saves a call's fixed cost per request
    host_calls: int = 2
    host_call_images: int = 2048
    max_images: int = 64
    max_bytes: int = 8_000_000
    # a request whose body has not fully arrived after this long gets 408: clients that send headers and part
    # of a body and then wait would otherwise hold ingress slots (max_ongoing_requests) until none is left
    body_timeout_s: float = 5.0
    admin_token: str = ""  # empty: diagnostics and fixed seeds are off
    application: str = "ensdef"
    gpu_as: str = ""  # request this custom resource instead of GPUs (placement tests on CPU-only clusters)
    # environment of every replica (its runtime_env). Memory against speed: glibc raises its mmap threshold as
    # large blocks are freed and keeps freed batch tensors in the heap (an ingress under load held 2 GB);
    # {"MALLOC_MMAP_THRESHOLD_": "4194304"} returns them to the OS, but large passes then page-fault afresh
    # (served throughput about halved on 2 cores, peak memory 9.2 -> 7.7 GB with a 128 KB threshold).
    env_vars: dict[str, str] = field(default_factory=dict)
    guard: GuardSettings = field(default_factory=GuardSettings)  # API keys, quotas, client series, detection

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ServeSettings:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(d) - known):
            raise ConfigError(f"unknown serve settings {unknown}; known: {sorted(known)}")
        if "packing" in d:
            d["packing"] = Packing(d["packing"])
        if "members" in d:
            d["members"] = _options(d["members"])
        if "overrides" in d:
            d["overrides"] = {k: _options(v) for k, v in d["overrides"].items()}
        if "guard" in d:
            d["guard"] = GuardSettings.from_dict(d["guard"])
        for key in ("defenses", "unpacked"):
            if key in d:
                d[key] = tuple(d[key])
        if not 0 <= float(d.get("quorum", 0.5)) < 1:
            raise ConfigError("quorum must lie in [0, 1)")
        if int(d.get("host_calls", 1)) < 1 or int(d.get("host_call_images", 1)) < 1:
            raise ConfigError("host_calls and host_call_images must be at least 1")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["packing"] = self.packing.value
        det = out["guard"]["detection"]
        det["action"], det["encoding"] = self.guard.detection.action.value, self.guard.detection.encoding.value
        out["defenses"], out["unpacked"] = list(self.defenses), list(self.unpacked)
        return out

    def options_for(self, member: str, role: str) -> MemberOptions:
        return self.overrides.get(member) or self.overrides.get(role) or self.members

    def host_name(self, member: str, role: str) -> str:
        """The deployment that hosts ``member``: its own, its pool's when packed, or the ingress replica."""
        alone = self.packing is Packing.NONE or member in self.unpacked or role in self.unpacked
        if alone:
            return f"member-{member}"
        return INGRESS_HOST if self.packing is Packing.INGRESS else f"pool-{role}"


def _options(d: dict[str, Any] | MemberOptions) -> MemberOptions:
    return d if isinstance(d, MemberOptions) else MemberOptions(**_known(MemberOptions, d, "member options"))
