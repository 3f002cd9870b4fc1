"""Whole daemons in one process over the in-memory network: a job from submit to settled."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import trio

import ledger
from node.daemon import Node
from node.ledger import TxRequest
from sandbox import Sandbox, tiny_model_path

from ._cluster import Cluster, cluster, tiny_inputs


def _conserved(state: ledger.State) -> None:
    ledger.check_invariants(state)
    held = sum(a.balance + a.stake + a.unbonding_total for _, a in state.accounts())
    escrowed = sum(e.remaining for _, e in state.escrows())
    total, issued = state.conservation()
    assert held + escrowed + state.fees == total == issued


async def _wait_closed(cl: Cluster, job_id: bytes) -> None:
    record = cl.requester.jobs[job_id]
    while not record.closed:
        await record.changed.wait()
    await cl.settle_blocks(2)


async def test_job_verified_with_redundancy_two_and_both_paid() -> None:
    model = tiny_model_path().read_bytes()
    inputs = tiny_inputs()
    with trio.fail_after(40):
        async with cluster(3) as cl:
            before = {n.me: n.ledger.state.balance(n.me) for n in cl.nodes}
            job_id = await cl.requester.submit_job(model, inputs, redundancy=2)
            await _wait_closed(cl, job_id)
            record = cl.requester.jobs[job_id]
            assert record.done is not None and record.done.status == "verified", record.events
            # The machine forgot the closed job (a long-running node must not grow); the
            # API's record keeps what the user sees.
            assert cl.requester.requester is not None
            assert job_id not in cl.requester.requester.jobs
            assert cl.requester.job_phase(record) == "closed"
            # the verified output is what the model computes
            with Sandbox() as sb:
                from sandbox import JobRequest

                expect = sb.run(JobRequest(runtime="onnx", model=model, inputs=inputs))
            assert record.outputs is not None
            for name, value in expect.outputs.items():
                np.testing.assert_array_equal(record.outputs[name], value)
            paid = {p.provider: p.amount for p in record.done.paid}
            assert len(paid) >= 2 and all(a > 0 for a in paid.values())
            state = cl.coordinator.ledger.state
            escrow = state.escrow(job_id)
            assert escrow is not None and not escrow.is_open
            assert dict(escrow.paid) == paid
            spent = before[cl.requester.me] - state.balance(cl.requester.me)
            assert spent == sum(paid.values())
            for node in cl.contributors:
                got = state.balance(node.me) - before[node.me]
                assert got == paid.get(node.me, 0)
            _conserved(state)
            roots = {n.ledger.state.root for n in cl.nodes if n.ledger.state.height == state.height}
            assert len(roots) == 1


async def test_on_a_chain_with_a_minimum_fee_every_node_pays_it_and_newcomers_are_paid() -> None:
    """Review round 5, R5-7: at fee 0 junk fills blocks for free, and the daemon could not
    pay a fee, so no network could ask for one. With ``min_fee`` 7 every transaction pays
    it; the contributors hold nothing, and their claims pay it out of their payouts."""
    fee = 7
    model = tiny_model_path().read_bytes()
    with trio.fail_after(40):
        async with cluster(3, min_fee=fee) as cl:
            assert all(n.ledger.state.balance(n.me) == 0 for n in cl.contributors)
            before = cl.requester.ledger.state.balance(cl.requester.me)
            job_id = await cl.requester.submit_job(model, tiny_inputs(), redundancy=2)
            await _wait_closed(cl, job_id)
            record = cl.requester.jobs[job_id]
            assert record.done is not None and record.done.status == "verified", record.events
            state = cl.coordinator.ledger.state
            escrow = state.escrow(job_id)
            assert escrow is not None and not escrow.is_open
            paid = dict(escrow.paid)
            claimed = set(escrow.claimed)
            assert claimed, "a verified winner is paid by its claim"
            claim_fees = 0
            for node in cl.contributors:
                got = state.balance(node.me)
                # a claim's fee comes out of its payout (its 3 checks' worth, at most a
                # tenth of it); a settle's payee pays none
                price = paid.get(node.me, 0)
                claim_fee = max(fee, min(3 * fee, price // 10)) if node.me in claimed else 0
                claim_fees += claim_fee
                assert got == price - claim_fee
            spent = before - state.balance(cl.requester.me)
            assert spent == sum(paid.values()) + 2 * fee  # its lock and its settle
            assert state.fees == 2 * fee + claim_fees
            _conserved(state)


async def _receipted_price(provider: Node, job_id: bytes) -> int:
    """Wait (bounded) until ``provider`` holds a receipt for the job; its award price."""
    assert provider.provider is not None
    for _ in range(400):
        work = provider.provider.work.get(job_id)
        if work is not None and work.receipt is not None and work.award is not None:
            return work.award.message.price
        await trio.sleep(0.02)
    raise AssertionError("the provider never got a receipt")


def _never_settles(node: Node) -> None:
    """``node`` keeps the outputs and never submits a settle (issue 14, attack 10): its
    providers are paid by claim, with the receipts it signed once the job was verified."""
    put = node.put_tx

    def no_settle(request: TxRequest) -> None:
        if not isinstance(request.payload, ledger.Settle):
            put(request)

    node.put_tx = no_settle  # type: ignore[method-assign]


def _hold_claims(node: Node) -> Callable[[], None]:
    """Keep ``node``'s claims from the queue until the returned release is called (then they
    go in, in order). Without it a verified provider claims at once and its work is gone
    before a test can see the receipt (the race CI found)."""
    put = node.put_tx
    held: list[TxRequest] = []

    def holding(request: TxRequest) -> None:
        if isinstance(request.payload, ledger.Claim):
            held.append(request)
        else:
            put(request)

    def release() -> None:
        node.put_tx = put  # type: ignore[method-assign]
        for request in held:
            put(request)
        held.clear()

    node.put_tx = holding  # type: ignore[method-assign]
    return release


async def _blocks_until(cl: Cluster, check: Callable[[], bool], limit: int = 100) -> None:
    """Wait block by block (bounded) until ``check()`` is true."""
    for _ in range(limit):
        if check():
            return
        await cl.settle_blocks(1)
    raise AssertionError("condition not reached within the block limit")


async def test_cheater_outvoted_unpaid_slashed_and_reputation_drops() -> None:
    model = tiny_model_path().read_bytes()
    with trio.fail_after(40):
        async with cluster(3, cheaters=(0,), stake=5_000_000) as cl:
            cheat = cl.contributors[0]
            state = cl.coordinator_state
            await _blocks_until(
                cl, lambda: all(state().account(n.me).stake for n in cl.contributors)
            )
            job_id = await cl.requester.submit_job(model, tiny_inputs(), redundancy=2)
            await _wait_closed(cl, job_id)
            record = cl.requester.jobs[job_id]
            assert record.done is not None and record.done.status == "verified"
            paid = {p.provider for p in record.done.paid}
            assert cheat.me not in paid and len(paid) >= 2
            await _blocks_until(cl, lambda: state().account(cheat.me).stake < 5_000_000)
            s = state()
            assert s.reputation(cheat.me) < ledger_half()
            for honest in paid:
                assert s.reputation(honest) > ledger_half()
            assert s.balance(cheat.me) == 0  # earned nothing
            _conserved(s)


async def test_adaptive_replication_runs_a_trusted_providers_job_alone() -> None:
    # [requester] replication = "adaptive", trust after one settled job: the first job
    # runs on two bonded newcomers; once both are paid, the next runs on one of them alone
    # and is verified, settled and paid with one payee.
    model = tiny_model_path().read_bytes()
    adaptive = {
        "replication": "adaptive",
        "trusted_jobs": 1,
        "trusted_score_permille": 600,
        "trusted_stake": 1_000_000,
        "audit_permille": 0,
    }
    with trio.fail_after(40):
        async with cluster(2, stake=5_000_000, requester_settings=adaptive) as cl:
            state = cl.coordinator_state
            await _blocks_until(
                cl, lambda: all(state().account(n.me).stake for n in cl.contributors)
            )
            first = await cl.requester.submit_job(model, tiny_inputs(), redundancy=2)
            await _wait_closed(cl, first)
            done = cl.requester.jobs[first].done
            assert done is not None and done.status == "verified" and len(done.paid) == 2
            await _blocks_until(
                cl, lambda: all(state().account(n.me).rep_s for n in cl.contributors)
            )
            second = await cl.requester.submit_job(model, tiny_inputs(), redundancy=2)
            await _wait_closed(cl, second)
            done = cl.requester.jobs[second].done
            assert done is not None and done.status == "verified" and len(done.paid) == 1
            _conserved(state())


def ledger_half() -> Fraction:
    return Fraction(1, 2)


async def test_no_provider_matches_reason_given_and_escrow_returned() -> None:
    model = tiny_model_path().read_bytes()
    with trio.fail_after(30):
        async with cluster(2, price_floor=50_000) as cl:
            before = cl.requester.ledger.state.balance(cl.requester.me)
            # a short deadline: the escrow is refunded at its expiry, never earlier
            job_id = await cl.requester.submit_job(
                model, tiny_inputs(), max_price=1_000, deadline_ms=2_000
            )
            await _wait_closed(cl, job_id)
            record = cl.requester.jobs[job_id]
            assert record.done is not None and record.done.status == "failed"
            assert record.done.no_bids is not None
            assert record.done.no_bids.primary == "price_below_floor"
            assert record.done.no_bids.lowest_floor == 50_000
            assert cl.requester.ledger.state.balance(cl.requester.me) == before
            _conserved(cl.coordinator.ledger.state)


async def test_provider_killed_mid_job_is_replaced_and_unpaid() -> None:
    model = tiny_model_path().read_bytes()
    with trio.fail_after(60):
        async with cluster(3, slow=(0, 1, 2)) as cl:
            job_id = await cl.requester.submit_job(model, tiny_inputs(), redundancy=1)
            running: list[object] = []
            for _ in range(200):
                running = [n for n in cl.contributors if n.runs is not None and job_id in n.runs]
                if running:
                    break
                await trio.sleep(0.05)
            assert running, "no provider started the job"
            victim = running[0]
            assert isinstance(victim, Node)
            cl.kill(victim)
            await _wait_closed(cl, job_id)
            record = cl.requester.jobs[job_id]
            assert record.done is not None and record.done.status == "verified", record.events
            paid = {p.provider for p in record.done.paid}
            assert victim.me not in paid and paid
            assert any(e == "replica_failed" for _, e, _ in record.events)
            assert len({*paid, victim.me}) == len(paid) + 1
            assert cl.coordinator.ledger.state.balance(victim.me) == 0
            _conserved(cl.coordinator.ledger.state)


async def test_requester_killed_after_delivery_provider_claims_after_deadline() -> None:
    model = tiny_model_path().read_bytes()
    with trio.fail_after(60):
        async with cluster(1, deadline_ms=4_000) as cl:
            fast = cl.contributors[0]
            _never_settles(cl.requester)  # receipts come with the verdict, with the settle
            release = _hold_claims(fast)
            job_id = await cl.requester.submit_job(model, tiny_inputs(), redundancy=1)
            price = await _receipted_price(fast, job_id)
            cl.kill(cl.requester)
            release()  # the claim goes in with its requester gone
            state = cl.coordinator_state
            await _blocks_until(cl, lambda: state().balance(fast.me) == price, limit=200)
            escrow = state().escrow(job_id)
            assert escrow is not None and escrow.paid_to(fast.me) == price
            assert fast.me in escrow.claimed
            _conserved(state())


async def test_both_sides_restart_after_delivery_claim_and_refund_still_happen(
    tmp_path: Path,
) -> None:
    """The requester and the provider both die after the receipt and come back with empty
    machines: the provider claims with the receipt it kept on disk, the requester refunds
    the rest of the escrow it finds open at expiry. Nothing stays locked."""
    model = tiny_model_path().read_bytes()
    with trio.fail_after(60):
        async with cluster(1, deadline_ms=4_000, state_root=tmp_path) as cl:
            fast = cl.contributors[0]
            _never_settles(cl.requester)  # receipts come with the verdict, with the settle
            _hold_claims(fast)  # never released: this life's claim dies with it
            job_id = await cl.requester.submit_job(model, tiny_inputs(), redundancy=1)
            price = await _receipted_price(fast, job_id)
            # the receipt is written on a worker thread, moments after the machine has it
            kept = tmp_path / fast.me.hex()[:16] / "receipts"
            for _ in range(500):
                if kept.is_dir() and list(kept.glob("*.receipt")):
                    break
                await trio.sleep(0.01)
            assert list(kept.glob("*.receipt"))
            cl.kill(cl.requester)
            cl.kill(fast)
            await cl.settle_blocks(1)
            assert cl.restart is not None
            fast = await cl.restart(fast)
            requester = await cl.restart(cl.requester)
            _never_settles(requester)  # its settle intent resumes from disk (issue 15)
            assert fast.provider is not None and not fast.provider.work  # nothing in memory
            assert requester.requester is not None and not requester.requester.jobs
            state = cl.coordinator_state

            def closed() -> bool:
                escrow = state().escrow(job_id)
                return escrow is not None and not escrow.is_open

            await _blocks_until(cl, closed, limit=300)
            escrow = state().escrow(job_id)
            assert escrow is not None and escrow.paid_to(fast.me) == price
            assert fast.me in escrow.claimed
            assert state().balance(fast.me) == price
            await cl.settle_blocks(2)
            assert not list((tmp_path / fast.me.hex()[:16] / "receipts").glob("*.receipt"))
            _conserved(state())


async def test_bids_and_receipts_ride_in_the_responses_they_answer() -> None:
    # A provider's bid answers the announcement sent to it, and the requester's receipt
    # answers the result: neither travels as a request of its own.
    import protocol
    from node.daemon import MARKET_PROTOCOL

    sent: dict[bytes, list[str]] = {}

    def spy(node: Node) -> None:
        request = node.net.request

        async def recording(peer: bytes, protocol_id: str, data: bytes, **kw: object) -> bytes:
            if protocol_id == MARKET_PROTOCOL:
                raw = protocol.unpack(data)[0]
                sent.setdefault(node.me, []).append(protocol.unpack(raw, check_types=False)[0])
            return await request(peer, protocol_id, data, **kw)  # type: ignore[arg-type]

        node.net.request = recording  # type: ignore[method-assign]

    with trio.fail_after(40):
        async with cluster(2) as cl:
            for node in cl.nodes:
                spy(node)
            job_id = await cl.requester.submit_job(tiny_model_path().read_bytes(), tiny_inputs())
            await _wait_closed(cl, job_id)
            record = cl.requester.jobs[job_id]
            assert record.done is not None and record.done.status == "verified", record.events
            assert any(event == "awarded" for _, event, _ in record.events), record.events
            assert sent[cl.requester.me].count(protocol.JobSpec.TAG) == 2  # announced to both
            winner = record.done.paid[0].provider
            assert protocol.Result.TAG in sent[winner]
            # Receipts come with the verdict: the one for the Result that completed it rides
            # in that Result's response; one for a replica delivered before goes on its own.
            assert sent[cl.requester.me].count(protocol.Receipt.TAG) <= 1
            assert not any(
                tag in (protocol.Bid.TAG, protocol.NoBid.TAG)
                for node in cl.contributors
                for tag in sent.get(node.me, [])
            )


async def test_a_torchscript_job_is_bid_in_torch_class_and_verified() -> None:
    """A bid names the class of the run it would make: a TorchScript run is in torch's
    class, not the node's ONNX class, so both replicas agree and are paid."""
    torch = pytest.importorskip("torch")

    class Affine(torch.nn.Module):  # type: ignore[misc,name-defined]
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[name-defined]
            return x * 3 - 1

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Affine()), buf)
    inputs = {"x": np.arange(4, dtype=np.float32)}
    with trio.fail_after(60):
        async with cluster(2) as cl:
            job_id = await cl.requester.submit_job(
                buf.getvalue(), inputs, runtime="torchscript", redundancy=2, min_memory_mb=2048
            )
            await _wait_closed(cl, job_id)
            record = cl.requester.jobs[job_id]
            assert record.done is not None and record.done.status == "verified", record.events
            assert record.outputs is not None
            assert record.outputs["output_0"].tolist() == [-1.0, 2.0, 5.0, 8.0]
            assert len(record.done.paid) == 2
            assert record.done.output is not None
            assert record.done.output.determinism_class.startswith("torch-")
