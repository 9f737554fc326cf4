"""The shared AdamW: fused by default, and the same update as torch's for-each implementation."""

import torch

from harness.training.optim import adamw


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(17, 5, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]
    return ps


def test_adamw_is_fused_by_default_and_matches_foreach():
    a, b = _params(), _params()
    oa = adamw(a, lr=1e-2, betas=(0.9, 0.95), weight_decay=1e-4)
    ob = adamw(b, lr=1e-2, betas=(0.9, 0.95), weight_decay=1e-4, fused=False)
    assert oa.param_groups[0]["fused"] and not ob.param_groups[0]["fused"] and ob.param_groups[0]["foreach"]
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for pa, pb in zip(a, b):
            grad = torch.randn(pa.shape, generator=g)
            pa.grad, pb.grad = grad.clone(), grad.clone()
        oa.step()
        ob.step()
    for pa, pb, p0 in zip(a, b, _params()):
        assert not torch.equal(pa, p0)                        # the parameters really moved
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-6)


def test_update_norm_from_adamw_state_equals_the_parameter_change():
    """The logged update norm is rebuilt from AdamW's state (no parameter copy): it must equal
    ||theta_after - theta_before|| of each step, fused or for-each, with weight decay, as the lr changes."""
    import math

    import pytest

    from harness.training.optim import adamw_update_sq_norm

    for fused in (True, False):
        ps = _params(3)
        opt = adamw(ps, lr=5e-2, betas=(0.9, 0.95), weight_decay=0.1, fused=fused)
        g = torch.Generator().manual_seed(4)
        for step in range(6):
            for group in opt.param_groups:
                group["lr"] = 5e-2 * (1 - step / 8)
            before = [p.detach().clone() for p in ps]
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g) * (10 if step == 2 else 1)
            opt.step()
            actual = math.sqrt(sum(float((p.detach() - b).double().pow(2).sum()) for p, b in zip(ps, before)))
            assert math.sqrt(adamw_update_sq_norm(opt)) == pytest.approx(actual, rel=1e-4)


def test_warmup_start_zero_is_transformers_and_first_step_moves_at_step_one():
    """zero: transformers' schedule exactly (lr 0 at the first step, as s1's Trainer); first-step: every
    warm-up step above 0, full rate at the last warm-up step, the same cosine afterwards."""
    from transformers import get_cosine_schedule_with_warmup

    from harness.training.optim import cosine_schedule

    def lrs(make, n=10):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched, out = make(opt), []
        for _ in range(n):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    ref = lrs(lambda o: get_cosine_schedule_with_warmup(o, 3, 10))
    assert lrs(lambda o: cosine_schedule(o, 3, 10, "zero")) == ref and ref[0] == 0.0
    shifted = lrs(lambda o: cosine_schedule(o, 3, 10, "first-step"))
    assert shifted[:3] == [1 / 3, 2 / 3, 1.0] and shifted[3:] == ref[3:]
    assert lrs(lambda o: cosine_schedule(o, 0, 10, "first-step")) == lrs(lambda o: get_cosine_schedule_with_warmup(o, 0, 10))
