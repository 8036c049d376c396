"""The Serve application: member hosts, one router per defense, one ingress (HTTP and gRPC).

``build_app(args)`` is the application builder named in ``deployments/serve.yaml`` (``serve deploy``) and
used by ``ensdef serve``; ``args`` are :class:`~deployments.settings.ServeSettings`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.member import MemberHost
from deployments.router import Router
from deployments.settings import Packing, ServeSettings
from ensdef.defenses.registry import DEFENSES, build_defense
from ensdef.presets import load_preset
from ensdef.store import ArtifactStore

log = logging.getLogger(__name__)


def served_defenses(s: ServeSettings) -> dict[str, list[str]]:
    """Defense name -> the member names its plan calls. Defenses named in the settings must be buildable;
    with none named, every registered defense whose artifacts are in the store (the others are logged)."""
    store, preset = ArtifactStore(s.store), load_preset(s.preset)
    out = {}
    for name in s.defenses or tuple(DEFENSES):
        try:
            out[name] = sorted(build_defense(name, store, preset).named_members())
        except FileNotFoundError as e:
            if s.defenses:
                raise
            log.warning("not serving %s: %s", name, e)
    if not out:
        raise FileNotFoundError(f"no defense can be built from store {s.store}; train it with `ensdef train`")
    return out


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
    s = ServeSettings.from_dict(args)
    # replicas do not share the driver's working directory: local paths become absolute (URIs stay)
    local = {k: str(Path(v).resolve()) for k, v in (("store", s.store), ("preset", s.preset)) if _is_local_path(v)}
    s = ServeSettings.from_dict({**s.to_dict(), **local})
    defenses = served_defenses(s)
    hosts_members = layout(s, {m for ms in defenses.values() for m in ms})
    host_of = {m: h for h, ms in hosts_members.items() for m in ms}
    store = ArtifactStore(s.store)
    hosts = {}
    for h, ms in hosts_members.items():
        opt = s.options_for(ms[0] if h.startswith("member-") else h, store.manifest(ms[0]).role.value)
        hosts[h] = MemberHost.options(
            name=h,
            num_replicas=opt.num_replicas,
            ray_actor_options=opt.actor_options(),
            max_ongoing_requests=s.max_ongoing_requests,
        ).bind(s.store, ms, opt.max_batch_size, opt.batch_wait_timeout_s, opt.max_pass_images)
    # one router per defense; packed, one replica routes for every defense (each replica imports torch)
    groups = {"all": list(defenses)} if s.packing is Packing.POOL else {d: [d] for d in defenses}
    routers = {}
    for g, ds in groups.items():
        ms = sorted({m for d in ds for m in defenses[d]})
        used = sorted({host_of[m] for m in ms})
        router = Router.options(
            name=f"router-{g}",
            ray_actor_options={"num_cpus": s.router_num_cpus},
            max_ongoing_requests=s.max_ongoing_requests,
        ).bind(ds, s.preset, s.store, {h: hosts[h] for h in used}, {m: host_of[m] for m in ms}, s.deadline_s, s.quorum)
        routers.update({d: router for d in ds})
    shape = store.manifest(next(iter(host_of))).input_shape
    return Ingress.options(
        ray_actor_options={"num_cpus": s.ingress_num_cpus}, max_ongoing_requests=s.max_ongoing_requests
    ).bind(routers, list(shape), s.max_images, s.max_bytes, s.admin_token)
