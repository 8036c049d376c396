"""Ray Tune on the test session's local Ray: a pool run interrupted part way and restored does not retrain
finished trials, Tune artifacts are the in-process trainer's (same manifest, same loader), and the team
sweep's winning list is what a running Serve application draws teams from."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch
import yaml

from ensdef.defenses.registry import build_defense, load_teams
from ensdef.presets import load_preset
from ensdef.rng import make_generator
from ensdef.store import TEAMS_ARTIFACT, ArtifactStore
from ensdef.training.pools import TEMPNET_INIT, Pool, plan_pool, train_pools
from tests.conftest import FIXTURES

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _serial_preset(tmp_path: Path) -> Path:
    """The tiny preset with five verifiers of three epochs, trained one trial at a time (longest first: cnn5,
    then cnn6, rbf_svm, lenet, mlp). The interrupt goes when the second trial starts; the four after cnn5 take
    about 8 s on the 2-core machine, so it lands part way even under load (at two epochs, with the wait on
    Tune's result files, it landed after the last trial)."""
    cfg = yaml.safe_load((FIXTURES / "tiny.yaml").read_text())
    cfg["verifiers"]["architectures"] = ["lenet", "mlp", "rbf_svm", "cnn6", "cnn5"]
    cfg["verifiers"]["train"]["epochs"] = 3
    cfg["tune"]["max_concurrent"] = 1
    path = tmp_path / "serial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _tune_finished(store: ArtifactStore) -> set[str]:
    """Members whose trial Tune's driver has logged as done (its ``result.json`` holds the ``done`` result;
    Ray 2.60 flushes that line only when the experiment stops, so this is read after the interrupt)."""
    done = set()
    for f in (Path(store.root) / "_tune").glob("*/*/result.json"):
        for line in f.read_text().splitlines():
            if line.strip() and (r := json.loads(line)).get("done"):
                done.add(r["member"])
    return done


def _trials_started(store: ArtifactStore) -> int:
    """Trials Tune has started (a trial's folder appears when it starts). With one trial at a time, a second
    one started means Tune's driver has processed the first one's end."""
    return len([d for d in (Path(store.root) / "_tune").glob("*/*") if d.is_dir()])


def test_interrupted_run_restores_without_retraining_finished_trials(ray_serve, tmp_path: Path) -> None:
    import ray
    from ray import tune

    from tune.pools import TuneRun, tune_pools

    preset_path, store = _serial_preset(tmp_path), ArtifactStore(tmp_path / "store")
    cmd = [sys.executable, "-m", "ensdef", "tune", "--preset", str(preset_path), "--pool", "verifiers"]
    cmd += ["--store", store.root, "--address", ray.get_runtime_context().gcs_address, "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _trials_started(store) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _trials_started(store) >= 2, f"no trial finished in time: {proc.stderr.read() if proc.poll() else ''}"
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune stops the running trial and saves the experiment state
    proc.wait(timeout=180)
    before = {n: store.manifest(n) for n in store.names()}
    finished = _tune_finished(store)
    assert finished and finished <= set(before), f"Tune saw {sorted(finished)} finish; stored {sorted(before)}"
    members = [p.name for p in plan_pool(load_preset(preset_path), Pool.VERIFIERS)]
    assert 0 < len(before) < len(members), f"the interrupt did not land part way: {sorted(before)}"
    experiments = list((Path(store.root) / "_tune").iterdir())
    assert len(experiments) == 1 and tune.Tuner.can_restore(str(experiments[0]))

    out = tune_pools(load_preset(preset_path), store, [Pool.VERIFIERS], TuneRun())
    assert out["experiment"] == experiments[0].name  # the same experiment, restored
    results = {a["name"]: a for a in out["artifacts"]}
    assert sorted(results) == sorted(store.names()) == sorted(members)
    for name in finished:  # trials Tune saw finish kept their results: not run again, not even skipped
        assert not results[name]["skipped"]
    for name, m in before.items():  # nothing stored before the interrupt was trained again
        assert store.manifest(name).created == m.created and store.manifest(name).sha256 == m.sha256
    for name in set(members) - set(before):
        assert store.verify(name).ok


def test_tune_artifacts_are_the_in_process_trainers(ray_serve, tmp_path: Path, mnist5k, monkeypatch) -> None:
    from tune.pools import TuneRun, tune_pools

    preset = load_preset(FIXTURES / "tiny.yaml")
    monkeypatch.chdir(tmp_path)  # the tuned store by a relative path, as `ensdef tune --store artifacts` gives it:
    # trials run in their own folders and once wrote a second store there
    tuned, local = ArtifactStore("tuned"), ArtifactStore(tmp_path / "local")
    tune_pools(preset, tuned, [Pool.TEMPNETS], TuneRun())
    train_pools(preset, mnist5k, local, [Pool.TEMPNETS])
    assert tuned.names() == local.names()
    for name in tuned.names():
        a, b = tuned.manifest(name), local.manifest(name)
        assert a.__dataclass_fields__.keys() == b.__dataclass_fields__.keys()
        assert (a.role, a.architecture, a.train_config, a.extra) == (b.role, b.architecture, b.train_config, b.extra)
        assert set(a.metrics) == set(b.metrics) and tuned.verify(name).ok
    # the in-process trainer keeps what Tune trained (same plan), and the defense loader takes either store
    before = {n: tuned.manifest(n).created for n in tuned.names()}  # the warm start's init among them
    kept = train_pools(preset, mnist5k, tuned, [Pool.TEMPNETS], skip_existing=True)
    assert TEMPNET_INIT in before and {a["name"] for a in kept["artifacts"]} == set(before)
    assert {n: tuned.manifest(n).created for n in tuned.names()} == before
    x = mnist5k.test.x[:4]
    for s in (tuned, local):
        assert len(build_defense("noisy-vote", s, preset).decide(x, make_generator(0))) == 4


def test_asha_sweep_writes_each_members_best_finished_trial(ray_serve, tmp_path: Path) -> None:
    from tune.pools import TuneRun
    from tune.sweeps import sweep_pool

    preset, store = load_preset(FIXTURES / "tiny.yaml"), ArtifactStore(tmp_path / "store")
    out = sweep_pool(preset, store, Pool.DENOISERS, TuneRun())
    members = [p.name for p in plan_pool(preset, Pool.DENOISERS)]
    assert sorted(out["chosen"]) == store.names() == sorted(members)
    assert out["trials"] == len(members) * preset.tune.sweeps["denoisers"].samples
    for name, chosen in out["chosen"].items():
        m = store.manifest(name)
        values = m.extra["sweep"]
        assert values == chosen["values"] and store.verify(name).ok
        assert m.train_config["weight_decay"] == values["weight_decay"] and 1e-9 <= values["weight_decay"] <= 1e-4
        assert m.train_config["lr"] == values["lr"] in (0.001, 0.003)
        assert chosen["score"] == max(chosen["finished_scores"]) == pytest.approx(-m.metrics["val_mse"])


@pytest.fixture(scope="module")
def tuned_store(ray_serve, tiny_store, tmp_path_factory):
    from tune.pools import TuneRun
    from tune.teams import tune_teams

    store, preset = tiny_store
    root = tmp_path_factory.mktemp("tuned") / "store"
    shutil.copytree(store.root, root)
    copy = ArtifactStore(root)
    return copy, preset, tune_teams(preset, copy, TuneRun())


def test_team_sweep_saves_the_best_trial(tuned_store) -> None:
    store, preset, out = tuned_store
    scores = [t["score"] for t in out["trials"]]
    assert len(scores) == 4 and out["winner"]["score"] == max(scores) >= 0
    saved = store.load_json(TEAMS_ARTIFACT)
    assert saved["tuned"]["policy"] == out["winner"]["policy"]
    assert [saved["tuned"][k] for k in ("min_team", "max_team")] == [
        out["winner"]["min_team"],
        out["winner"]["max_team"],
    ]
    teams, _ = load_teams(store, preset, torch.device("cpu"))
    assert teams.policy.value == out["winner"]["policy"]
    assert all(out["winner"]["min_team"] <= len(t) <= out["winner"]["max_team"] for t in teams.ranked)


def test_serve_draws_teams_from_the_tuned_list(ray_serve, tuned_store, mnist5k) -> None:
    from ray import serve

    from deployments.launch import deploy
    from deployments.settings import ServeSettings

    store, preset, out = tuned_store
    s = ServeSettings.from_dict(
        {
            "preset": str(FIXTURES / "tiny.yaml"),
            "store": store.root,
            "defenses": ["verification", "modef"],
            "members": {"num_cpus": 0.05},
            "router_num_cpus": 0.02,
            "ingress_num_cpus": 0.02,
            "admin_token": "t",
            "application": "ensdef-tuned",
        }
    )
    ep = deploy(s, "127.0.0.1", ray_serve["http"], ray_serve["grpc"], ingress=ray_serve["ingress"])
    try:
        saved = store.load_json(TEAMS_ARTIFACT)
        allowed = {tuple(saved["members"][i] for i in t) for t in saved["ranked"]}
        if saved["tuned"]["policy"] == "best_kappa":
            allowed = {tuple(saved["members"][i] for i in saved["best"])}
        x = mnist5k.test.x[:6]
        for defense in ("verification", "modef"):
            for seed in (1, 2, 3):
                r = requests.post(
                    f"{ep.http}/v1/{defense}/classify",
                    json={"images": x.tolist(), "seed": seed},
                    headers={"X-Admin-Token": "t"},
                    timeout=120,
                )
                assert r.status_code == 200, r.text
                answers = r.json()["answers"]
                want = build_defense(defense, store, preset).decide(x, make_generator(seed))
                assert [a["label"] for a in answers] == [d.label for d in want]
                assert [a["flagged"] for a in answers] == [d.flagged for d in want]
                assert all(tuple(a["diagnostics"]["team"]) in allowed for a in answers)
    finally:
        serve.delete(s.application)
