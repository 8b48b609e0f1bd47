"""The step both loops take (pipeline.training.step.Stepper): pass-through without fp16, the
GradScaler with it, and under DDP with accumulation one all-reduce per optimiser step."""

import gc

import pytest
import torch
from torch import nn

from pipeline.training.optim import make_optimizer
from pipeline.training.step import Stepper


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def _batches(n=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 5, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def test_without_fp16_it_takes_the_same_steps_as_a_plain_loop_bit_for_bit():
    plain, stepped = _model(), _model()
    opt_a = make_optimizer([{"params": list(plain.parameters())}], "adamw", 1e-2, 0.05)
    opt_b = make_optimizer([{"params": list(stepped.parameters())}], "adamw", 1e-2, 0.05)
    stepper = Stepper(opt_b, stepped.parameters(), grad_clip=0.5, precision="bf16")
    assert not stepper.scaler.is_enabled() and stepper.state_dict() is None
    for x, y in _batches():
        opt_a.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(plain(x), y).backward()
        nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
        opt_a.step()
        stepper.backward(nn.functional.cross_entropy(stepped(x), y))
        stepper.step()
    for a, b in zip(plain.parameters(), stepped.parameters()):
        assert torch.equal(a, b)


def test_accumulation_divides_each_loss_and_steps_once_per_group():
    model = _model()
    opt = make_optimizer([{"params": list(model.parameters())}], "sgd", 0.1, 0.0, momentum=0.0)
    stepper = Stepper(opt, model.parameters(), accumulate=3)
    assert [stepper.closes_group(k, 5) for k in range(5)] == [False, False, True, False, True]
    reference = _model()
    batches = _batches(3)
    loss = sum(nn.functional.cross_entropy(reference(x), y) for x, y in batches) / 3
    loss.backward()
    expected = [p.detach() - 0.1 * p.grad for p in reference.parameters()]
    for k, (x, y) in enumerate(batches):
        stepper.backward(nn.functional.cross_entropy(model(x), y))
        if stepper.closes_group(k, len(batches)):
            stepper.step()
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)
    with pytest.raises(ValueError, match="accumulate 0"):
        Stepper(opt, model.parameters(), accumulate=0)


def test_fp16_scales_the_loss_and_skips_a_step_whose_gradients_overflowed():
    model = _model()
    opt = make_optimizer([{"params": list(model.parameters())}], "sgd", 0.1, 0.0, momentum=0.0)
    # GradScaler on CPU (torch has it there): the fine-tune's fp16 path, without a GPU
    stepper = Stepper(opt, model.parameters(), grad_clip=1.0, precision="fp16", device="cpu")
    assert stepper.scaler.is_enabled()
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batches(1)[0]
    stepper.backward(nn.functional.cross_entropy(model(x), y) * float("inf"))  # an overflow
    scale = stepper.scaler.get_scale()
    stepper.step()
    for p, b in zip(model.parameters(), before):  # skipped: no NaN written into the weights
        assert torch.equal(p, b)
    assert stepper.scaler.get_scale() == scale / 2
    # a finite step: the gradients are unscaled before clipping, so the update is the plain one
    reference = _model()
    nn.functional.cross_entropy(reference(x), y).backward()
    nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    stepper.backward(nn.functional.cross_entropy(model(x), y))
    stepper.step()
    for p, r in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.detach(), r.detach() - 0.1 * r.grad)
    saved = stepper.state_dict()
    again = Stepper(opt, model.parameters(), precision="fp16", device="cpu")
    again.load_state_dict(saved)
    assert again.scaler.get_scale() == stepper.scaler.get_scale()


ACCUMULATE = (2, 4)


def _ddp_run(rank: int, world: int, accumulate: int, out: str) -> None:
    """4 micro-batches at ``accumulate`` under DDP; writes the all-reduce count and weights."""
    model = _model()
    ddp = nn.parallel.DistributedDataParallel(model)
    calls = []

    def counting(state, bucket):  # DDP calls it once per bucket per synchronisation
        calls.append(1)
        tensor = bucket.buffer().div_(world)
        work = torch.distributed.all_reduce(tensor, async_op=True)
        return work.get_future().then(lambda f: f.value()[0])

    ddp.register_comm_hook(None, counting)
    opt = make_optimizer([{"params": list(model.parameters())}], "sgd", 0.1, 0.0, momentum=0.0)
    stepper = Stepper(opt, model.parameters(), accumulate=accumulate)
    batches = _batches(4 * world)[rank::world]
    for k, (x, y) in enumerate(batches):
        with stepper.micro_batch(ddp, k, len(batches)):
            stepper.backward(nn.functional.cross_entropy(ddp(x), y))
        if stepper.closes_group(k, len(batches)):
            stepper.step()
    torch.save({"calls": len(calls), "weights": [p.detach() for p in model.parameters()]},
               f"{out}/{rank}-{accumulate}.pt")


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    """One DDP process: :func:`_ddp_run` at each of :data:`ACCUMULATE`."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank,
                                         world_size=world)
    try:
        for accumulate in ACCUMULATE:
            _ddp_run(rank, world, accumulate, out)
        # Each DDP is gone (gc: its hooks make cycles) and both processes meet before gloo is torn
        # down, as the fine-tune loop ends: without this a process aborted at exit ("terminate
        # called without an active exception") in about 1 run in 3 here.
        gc.collect()
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch: about 10 s on 2 busy cores
def test_under_ddp_only_the_last_micro_batch_of_a_group_synchronises(tmp_path):
    """2-process gloo DDP on CPU: one all-reduce per optimiser step (not per micro-batch), and
    the gradients are still those of both processes' batches."""
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
        start_method="spawn")
    for accumulate in ACCUMULATE:
        results = [torch.load(tmp_path / f"{rank}-{accumulate}.pt", weights_only=True)
                   for rank in range(2)]
        assert [r["calls"] for r in results] == [4 // accumulate] * 2, accumulate
        # the weights of one process that trained on every micro-batch of both (each group's
        # mean loss over both processes' batches)
        reference = _model()
        opt = torch.optim.SGD(reference.parameters(), lr=0.1)
        batches = _batches(8)
        for start in range(0, 4, accumulate):
            group = [b for k in range(start, start + accumulate)
                     for b in batches[2 * k:2 * k + 2]]
            opt.zero_grad()
            loss = sum(nn.functional.cross_entropy(reference(x), y) for x, y in group)
            (loss / len(group)).backward()
            opt.step()
        for rank in range(2):
            for w, r in zip(results[rank]["weights"], reference.parameters()):
                torch.testing.assert_close(w, r.detach())
