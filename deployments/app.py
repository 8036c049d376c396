"""The Serve application: member hosts, one router per defense (packed: the ingress routes), one ingress (HTTP
and gRPC).

``build_app(args)`` is the application builder named in ``deployments/serve.yaml`` (``serve deploy``) and
used by ``ensdef serve``; ``args`` are :class:`~deployments.settings.ServeSettings`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ray.serve import Application
from ray.serve.config import BackpressureConfig

from deployments.guard import with_threshold
from deployments.ingress import Ingress
from deployments.member import MemberHost
from deployments.router import Router
from deployments.settings import INGRESS_HOST, Action, GuardSettings, Packing, ServeSettings
from deployments.versions import host_version
from ensdef.data import load_dataset
from ensdef.defenses.registry import DEFENSES, describe_defense
from ensdef.errors import NotTrained
from ensdef.guard.calibration import calibrate
from ensdef.presets import load_preset
from ensdef.rng import make_generator
from ensdef.store import ArtifactStore

log = logging.getLogger(__name__)


def survey(s: ServeSettings) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``(servable, missing)``: defense -> the member names its plan calls, for every defense named in the
    settings (all registered ones when none are) that the store can build; defense -> why not, for the rest.
    Reads manifests and JSON artifacts only (weight-free descriptions), never a weight file."""
    store, preset = ArtifactStore(s.store), load_preset(s.preset)
    servable, missing = {}, {}
    for name in s.defenses or tuple(DEFENSES):
        try:
            servable[name] = sorted(describe_defense(name, store, preset).members)
        except NotTrained as e:
            missing[name] = str(e)
    return servable, missing


def served_defenses(s: ServeSettings) -> dict[str, list[str]]:
    """The defenses to deploy. Defenses named in the settings must be buildable; with none named, every
    registered defense whose artifacts are in the store (the others are logged)."""
    servable, missing = survey(s)
    if s.defenses and missing:
        raise NotTrained("; ".join(f"{k}: {v}" for k, v in missing.items()))
    for name, why in missing.items():
        log.warning("not serving %s: %s", name, why)
    if not servable:
        raise NotTrained(f"no defense can be built from store {s.store}; train it with `ensdef train`")
    return servable


def layout(s: ServeSettings, members: set[str]) -> dict[str, list[str]]:
    """Host deployment name -> the members it hosts: one per member, or one per pool (role) when packed."""
    store = ArtifactStore(s.store)
    hosts: dict[str, list[str]] = defaultdict(list)
    for m in sorted(members):
        hosts[s.host_name(m, store.manifest(m).role.value)].append(m)
    return dict(hosts)


def _is_local_path(v: str) -> bool:
    return "://" not in v and (Path(v).exists() or "/" in v)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application builder of ``serve deploy`` (``import_path: deployments.app:build_app``)."""
    s = absolute(ServeSettings.from_dict(args))
    return application(s, served_defenses(s))


def absolute(s: ServeSettings) -> ServeSettings:
    """Replicas do not share the driver's working directory: local paths become absolute (URIs stay)."""
    return replace(
        s, **{k: str(Path(v).resolve()) for k, v in (("store", s.store), ("preset", s.preset)) if _is_local_path(v)}
    )


def _control(num_cpus: float, resources: dict[str, float], env_vars: dict[str, str]) -> dict[str, Any]:
    return _with_env({"num_cpus": num_cpus, **({"resources": dict(resources)} if resources else {})}, env_vars)


def _with_env(options: dict[str, Any], env_vars: dict[str, str]) -> dict[str, Any]:
    return {**options, "runtime_env": {"env_vars": dict(env_vars)}} if env_vars else options


def ingress_options(s: ServeSettings, packs_members: bool) -> dict[str, Any]:
    """Ray actor options of the ingress replica: a control actor (``ingress_num_cpus``, ``control_resources``)
    that, with members packed into it (``packing: ingress``), also asks for the members' GPU share and custom
    resources (``members`` options, ``gpu_as`` applied), so its members run on CUDA where the cluster has GPUs."""
    out = _control(s.ingress_num_cpus, s.control_resources, {})
    if packs_members:
        m = s.members.actor_options(s.gpu_as)
        out["num_gpus"] = m["num_gpus"]
        res = dict(out.get("resources", {}))
        for k, v in m.get("resources", {}).items():
            res[k] = res.get(k, 0.0) + v
        if res:
            out["resources"] = res
    return _with_env(out, s.env_vars)


def application(s: ServeSettings, defenses: dict[str, list[str]]) -> Application:
    """Member hosts, routers and the ingress for ``defenses`` (defense -> member names)."""
    hosts_members = layout(s, {m for ms in defenses.values() for m in ms})
    host_of = {m: h for h, ms in hosts_members.items() for m in ms}
    store = ArtifactStore(s.store)
    hosts, local = {}, hosts_members.pop(INGRESS_HOST, None)
    for h, ms in hosts_members.items():
        opt = s.options_for(ms[0] if h.startswith("member-") else h, store.manifest(ms[0]).role.value)
        args = (s.store, ms, opt.max_batch_size, opt.batch_wait_timeout_s, opt.max_pass_images, opt.threads)
        hosts[h] = (
            MemberHost.options(
                name=h,
                num_replicas=opt.num_replicas,
                ray_actor_options=_with_env(opt.actor_options(s.gpu_as), s.env_vars),
                max_ongoing_requests=s.max_ongoing_requests,
            )
            .options(version=host_version(store, ms, args), _internal=True)  # a redeploy keeps unchanged hosts
            .bind(*args)
        )

    def routing(ds: list[str]) -> dict[str, Any]:
        ms = sorted({m for d in ds for m in defenses[d]})
        used = sorted({host_of[m] for m in ms} - {INGRESS_HOST})
        opt = s.members
        return {
            "defenses": ds,
            "preset": s.preset,
            "store": s.store,
            "hosts": {h: hosts[h] for h in used},
            "host_of": {m: host_of[m] for m in ms},
            "deadline_s": s.deadline_s,
            "quorum": s.quorum,
            "host_calls": s.host_calls,
            "host_call_images": s.host_call_images,
            "local": {"members": local, "max_pass_images": opt.max_pass_images, "threads": opt.threads}
            if local
            else None,
        }

    # one router deployment per defense; packed, the ingress routes every defense itself (one hop less, and
    # one torch-importing replica fewer)
    routers, inline = {}, None
    if s.packing in (Packing.POOL, Packing.INGRESS):
        inline = routing(list(defenses))
    else:
        for d in defenses:
            routers[d] = Router.options(
                name=f"router-{d}",
                ray_actor_options=_control(s.router_num_cpus, s.control_resources, s.env_vars),
                max_ongoing_requests=s.max_ongoing_requests,
            ).bind(**routing([d]))
    shape = store.manifest(next(iter(host_of))).input_shape
    return Ingress.options(
        ray_actor_options=ingress_options(s, bool(local)),
        max_ongoing_requests=s.ingress_max_ongoing_requests,
        max_queued_requests=s.ingress_max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=1),
    ).bind(
        routers,
        inline,
        list(shape),
        s.max_images,
        s.max_bytes,
        s.admin_token,
        s.store,
        s.body_timeout_s,
        s.max_client_requests,
        calibrated(s.guard, s.preset, store),
    )


def calibrated(g: GuardSettings, preset: str, store: ArtifactStore) -> GuardSettings:
    """``g`` with its detection threshold set: as configured, or calibrated on benign streams drawn from the
    preset's training split (fixed seed: the same threshold on every start), kept in the store for the next."""
    det = g.detection
    if det.action is Action.OFF or det.threshold > 0:
        return g
    p = load_preset(preset)
    spec = det.spec()
    params = {"dataset": p.dataset, "spec": {**asdict(spec), "encoding": spec.encoding.value}, "seed": 0}
    params |= {"fpr": det.fpr, "margin": det.margin, "format": 1}
    name = "guard-threshold-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    if store.has_json(name):
        return with_threshold(g, float(store.load_json(name)["threshold"]))
    pool = load_dataset(p.dataset, p.data_root).train.x
    t = calibrate(spec, pool, make_generator(0), fpr=det.fpr, margin=det.margin)
    try:
        store.save_json(name, {**params, "threshold": t})
    except OSError as e:  # a read-only store: calibrate again next time
        log.warning("could not keep the detection threshold in the store: %s", e)
    return with_threshold(g, t)
