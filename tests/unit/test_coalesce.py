"""Coalesced host calls (deployments.coalesce): concurrent requests share calls, yet every request gets exactly
the answer it gets alone; a failed call fails only the requests it carried; a request that gave up is not sent.
The host here is the library itself running the tiny preset's members (random weights, no Ray)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from deployments.coalesce import HostCalls
from ensdef.defenses.plans import Job, run_job
from ensdef.defenses.registry import build_defense
from ensdef.rng import make_generator


class LocalHost:
    """Answers bundles with the members themselves, after ``delay`` seconds; fails the calls numbered in
    ``fail`` (0-based)."""

    def __init__(
        self,
        members: dict[str, torch.nn.Module],
        delay: float = 0.01,
        fail: tuple[int, ...] = (),
        hang: tuple[int, ...] = (),
    ) -> None:
        self.members, self.delay, self.fail, self.hang = members, delay, fail, hang
        self.bundles: list[int] = []  # requests per call

    async def send(self, bundle: list[list[Job]]) -> list[list[torch.Tensor]]:
        n = len(self.bundles)
        self.bundles.append(len(bundle))
        await asyncio.sleep(3600 if n in self.hang else self.delay)
        if n in self.fail:
            raise RuntimeError(f"host call {n} failed")
        with torch.no_grad():
            return [[run_job(self.members[j.member], j) for j in jobs] for jobs in bundle]


async def _decide(defense, calls: HostCalls, x: torch.Tensor, seed: int):  # noqa: ANN001, ANN202
    plan = defense.plan(x, make_generator(seed))
    try:
        jobs = next(plan)
        while True:
            jobs = plan.send(await calls.call(jobs))
    except StopIteration as done:
        return done.value


@pytest.mark.parametrize("name", ["noisy-vote", "modef", "det"])
def test_coalesced_requests_answer_as_alone(name: str, random_store, mnist5k) -> None:
    store, preset = random_store
    d = build_defense(name, store, preset)
    host = LocalHost(d.named_members())
    calls = HostCalls(host.send, max_in_flight=1)
    xs = [mnist5k.test.x[i * 7 : i * 7 + 2] for i in range(8)]

    async def main() -> list:
        return await asyncio.gather(*(_decide(d, calls, x, 10 + i) for i, x in enumerate(xs)))

    got = asyncio.run(main())
    assert got == [d.decide(x, make_generator(10 + i)) for i, x in enumerate(xs)]
    assert calls.calls == len(host.bundles) < sum(host.bundles), host.bundles  # fewer calls than job lists
    assert max(host.bundles) > 1


def test_failed_call_fails_only_its_requests(random_store, mnist5k) -> None:
    store, preset = random_store
    d = build_defense("noisy-vote", store, preset)
    host = LocalHost(d.named_members(), fail=(1,))
    calls = HostCalls(host.send, max_in_flight=1)
    xs = [mnist5k.test.x[i : i + 1] for i in range(5)]

    async def main() -> list:
        return await asyncio.gather(*(_decide(d, calls, x, i) for i, x in enumerate(xs)), return_exceptions=True)

    got = asyncio.run(main())
    assert host.bundles == [1, 4]  # the first request alone, the other four queued behind it
    assert got[0] == d.decide(xs[0], make_generator(0))
    assert all(isinstance(g, RuntimeError) and "host call 1 failed" in str(g) for g in got[1:])


def test_request_that_gave_up_is_not_sent_and_bundles_respect_max_images(random_store, mnist5k) -> None:
    store, preset = random_store
    d = build_defense("target", store, preset)
    host = LocalHost(d.named_members(), delay=0.05)
    calls = HostCalls(host.send, max_in_flight=1, max_images=4)
    xs = [mnist5k.test.x[2 * i : 2 * i + 2] for i in range(6)]

    async def main() -> list:
        first = asyncio.ensure_future(_decide(d, calls, xs[0], 0))
        await asyncio.sleep(0)
        impatient = asyncio.ensure_future(asyncio.wait_for(_decide(d, calls, xs[1], 1), 0.01))
        rest = [asyncio.ensure_future(_decide(d, calls, x, i)) for i, x in enumerate(xs[2:], 2)]
        return await asyncio.gather(first, impatient, *rest, return_exceptions=True)

    got = asyncio.run(main())
    assert isinstance(got[1], TimeoutError)
    assert sum(host.bundles) == 5  # the impatient request was never sent
    assert host.bundles == [1, 2, 2]  # two 2-image requests fill a 4-image call
    for i in (0, 2, 3, 4, 5):
        assert got[i] == d.decide(xs[i], make_generator(i))


def test_hung_call_times_out_and_frees_its_slot(random_store, mnist5k) -> None:
    store, preset = random_store
    d = build_defense("target", store, preset)
    host = LocalHost(d.named_members(), hang=(0,))
    calls = HostCalls(host.send, max_in_flight=1, timeout_s=0.2)
    x = mnist5k.test.x[:2]

    async def main() -> list:
        first = await asyncio.gather(_decide(d, calls, x, 0), return_exceptions=True)
        return [*first, await _decide(d, calls, x, 1)]

    got = asyncio.run(asyncio.wait_for(main(), 30))
    assert isinstance(got[0], TimeoutError)
    assert got[1] == d.decide(x, make_generator(1)) and calls.in_flight == 0


def test_bad_limits_are_refused() -> None:
    async def send(bundle: list[list[Job]]) -> list[list[torch.Tensor]]:
        return [[] for _ in bundle]

    with pytest.raises(ValueError, match="at least 1"):
        HostCalls(send, max_in_flight=0)
