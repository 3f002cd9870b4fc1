"""Review round 58, F1 (high): a spot check's canary was signed with no spot checks and
one replica, and created at the same millisecond as its job, so a provider seeing the whole
JobSpec told it apart: honest where ``spot_check_permille`` was 0 (every canary) and wrong
where it was not (exactly the jobs that asked for spot checks), it was paid for wrong
outputs and never caught. A canary's signed fields are now its job's but for what it runs,
its nonce and a creation time drawn a little earlier."""

from __future__ import annotations

import random
from dataclasses import fields, replace

from protocol import JobSpec
from scheduler import Requester, RequesterConfig
from scheduler._requester_awards import CANARY_JITTER_MS, canary_for, jittered

from ._harness import Sim, commitment, known_answer, spot_checked

RUNS = {"nonce", "runtime", "model_hash", "model_size", "inputs", "created_ms"}


def test_a_canary_differs_from_its_job_only_in_what_it_runs() -> None:
    sim = Sim(58)
    canary = known_answer(sim)
    req = sim.add_requester()
    for seed in range(20):
        config = RequesterConfig(
            key=req.key,
            chain_id="aimx-test",
            commitment=commitment,
            canaries=(canary,),
            rng=random.Random(seed),
        )
        spec = sim.spec(
            req, redundancy=1 + seed % 3, max_retries=seed % 2, spot_check_permille=1000
        )
        drawn = canary_for(spec, config)
        assert drawn is not None
        check, _ = drawn
        same = {f.name for f in fields(JobSpec)} - RUNS
        assert {n: getattr(check, n) for n in same} == {n: getattr(spec, n) for n in same}
        # the tree before: spot_check_permille 0 and redundancy 1 on every canary
        assert check.verification == spec.verification and check.redundancy == spec.redundancy
        assert check.deadline_ms == spec.deadline_ms  # its run time as the job's
        assert 0 <= spec.created_ms - check.created_ms <= CANARY_JITTER_MS


def test_a_provider_wrong_only_where_spot_checks_are_asked_is_caught() -> None:
    sim = Sim(11)
    cheat, check = spot_checked(sim, "spotwise")
    # the tree before: the canary passed (it asked for no spot checks), the job was wrong
    assert sim.done[check].status == "failed"
    against = [(a.subject, a.positive) for a in sim.attests if a.job_id == check]
    assert against == [(cheat.pub, False)]


def test_a_tight_job_keeps_its_deadline_and_one_with_no_spot_checks_is_as_given() -> None:
    """Round 60, F1: drawn earlier with its creation time, a tight job's deadline left it a
    few milliseconds to run; and jobs with no spot check, which have no canary to hide
    among, were drawn too."""
    sim = Sim(12)
    req = sim.add_requester()
    config = RequesterConfig(
        key=req.key, chain_id="aimx-test", commitment=commitment, canaries=(known_answer(sim),)
    )
    spec = sim.spec(req, spot_check_permille=1000)
    tight = replace(spec, deadline_ms=sim.now + spec.bid_window_ms + 1_000)
    for _ in range(50):
        assert jittered(tight, config).deadline_ms == tight.deadline_ms
    unchecked = sim.spec(req, spot_check_permille=0)
    assert jittered(unchecked, config) == unchecked


def test_the_earlier_created_of_a_job_and_its_canary_is_either() -> None:
    """Round 59: with only the canary's creation drawn earlier, the earlier of the pair was
    the canary 200 times in 200. The job's is drawn the same way now."""
    sim = Sim(59)
    canary = known_answer(sim)
    req = sim.add_requester()
    canary_first = 0
    for seed in range(100):
        machine = Requester(
            RequesterConfig(
                key=req.key,
                chain_id="aimx-test",
                commitment=commitment,
                canaries=(canary,),
                rng=random.Random(seed),
            )
        )
        spec = sim.spec(req, spot_check_permille=1000)
        machine.submit(spec, sim.now)
        [job] = [j.spec for j in machine.jobs.values() if not j.spot_check]
        [check] = [j.spec for j in machine.jobs.values() if j.spot_check]
        assert job.created_ms <= spec.created_ms and job.deadline_ms == spec.deadline_ms
        canary_first += check.created_ms < job.created_ms
    assert 25 <= canary_first <= 75  # round 58's mend: 100
