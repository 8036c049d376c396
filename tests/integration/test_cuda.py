"""GPU paths: every registered model and defense runs on CUDA tensors, keeps its outputs on the input's device,
and agrees with its CPU twin where no noise is drawn. CI has no GPU, so these skip there; on a GPU machine run
``pytest -m cuda`` (the ``tiny_store`` fixture then trains on CUDA too, through the ``auto`` device)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import norm

from ensdef.defenses.noisy_vote import NoisyVoteEnsemble
from ensdef.defenses.plans import Job, Op, run_job
from ensdef.defenses.registry import DEFENSES, build_defense, load_role
from ensdef.evaluation.certify import certify
from ensdef.models import MODELS, Kind
from ensdef.rng import make_generator
from ensdef.types import ABSTAIN, Role
from tests.unit.test_models import CASE_IDS, CASES, built_with_input

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


@pytest.mark.parametrize(("name", "shape"), CASES, ids=CASE_IDS)
def test_model_runs_and_backprops_on_cuda_like_on_cpu(name: str, shape: tuple[int, int, int]) -> None:
    model, x = built_with_input(name, shape)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    model.to(CUDA)
    out = model(x.to(CUDA))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.detach().cpu(), ref, rtol=1e-3, atol=1e-4)
    loss = out.logsumexp(1).sum() if MODELS[name].kind is Kind.CLASSIFIER else out.square().mean()
    loss.backward()
    assert all(p.grad is None or p.grad.device.type == "cuda" for p in model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_defense_decides_on_cuda_and_its_surrogate_matches_cpu(tiny_store, mnist5k, name: str) -> None:
    store, preset = tiny_store
    cpu, gpu = build_defense(name, store, preset, "cpu"), build_defense(name, store, preset, CUDA)
    x = mnist5k.test.x[::100][:6]
    xg = x.to(CUDA)
    first = gpu.decide(xg, make_generator(4))
    assert len(first) == 6 and first == gpu.decide(xg, make_generator(4)), "a CPU generator replays CUDA noise"
    assert all(-1 <= d.label < 10 for d in first)
    assert [d.label for d in gpu.decide(xg, make_generator(4, CUDA))] == [
        d.label for d in gpu.decide(xg, make_generator(4, CUDA))
    ]
    torch.testing.assert_close(gpu.surrogate(xg, None).cpu(), cpu.surrogate(x, None), rtol=1e-3, atol=1e-4)
    xr = xg.clone().requires_grad_(True)
    out = gpu.surrogate(xr, make_generator(1))
    assert out.device.type == "cuda" and torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out[torch.arange(6), mnist5k.test.y[::100][:6].to(CUDA)].sum(), xr)
    assert grad.device.type == "cuda" and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_noisy_member_jobs_and_certification_run_on_cuda(tiny_store, mnist5k) -> None:
    store, preset = tiny_store
    _, members = load_role(store, Role.TEMPNET, CUDA)
    x = mnist5k.test.x[:4].to(CUDA)
    labels = run_job(members[0], Job("tempnet-01", Op.NOISY_LABELS, x, seed=7, sigma=0.5))
    assert labels.device.type == "cuda" and labels.shape == (4,)
    assert torch.equal(labels, run_job(members[0], Job("tempnet-01", Op.NOISY_LABELS, x, seed=7, sigma=0.5)))
    ens = NoisyVoteEnsemble(members, sigma=0.5)
    c = preset.noisy_vote
    cert = certify(ens.base_vote, x[0], c.sigma, c.n0, c.n, c.alpha, 10, make_generator(0), c.batch_size)
    again = certify(ens.base_vote, x[0], c.sigma, c.n0, c.n, c.alpha, 10, make_generator(0), c.batch_size)
    assert cert == again and 0 <= cert.n_a <= c.n
    assert cert.label == ABSTAIN or cert.radius == pytest.approx(c.sigma * norm.ppf(cert.p_a_lower))


def test_a_cuda_member_answers_a_cpu_job_on_cpu(tiny_store, mnist5k) -> None:
    """In-process plans hand members the caller's tensors: a member on CUDA computes there and answers on the
    caller's device, with the noise a served replica on CUDA would draw."""
    store, _ = tiny_store
    _, (member, *_) = load_role(store, Role.TEMPNET, CUDA)
    x = mnist5k.test.x[:4]
    for op in (Op.PROBS, Op.LABELS, Op.NOISY_LABELS):
        out = run_job(member, Job("tempnet-01", op, x, seed=3, sigma=0.5))
        assert out.device.type == "cpu"
        assert torch.equal(out, run_job(member, Job("tempnet-01", op, x.to(CUDA), seed=3, sigma=0.5)).cpu())
