"""The fused LM head (log-probs from hidden states, chunked) equals the plain path: values and gradients."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from harness.training.batching import Batch, batch_logprobs
from harness.training.fused_head import fused_supported, fused_token_logprobs


def _model(tie: bool, vocab: int = 500):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie))


def _batch(vocab: int = 500):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 21), generator=g)
    att = torch.ones_like(ids)
    att[1, 15:] = 0
    att[2, 9:] = 0
    return Batch(ids, att, att[:, 1:].bool(), [0, 1, 2], [21, 15, 9])


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("tie", [True, False])
def test_fused_equals_plain_float32(tie):
    model, b = _model(tie), _batch()
    g = torch.randn(3, 20, generator=torch.Generator().manual_seed(2))
    plain = batch_logprobs(model, b)
    (plain * g).sum().backward()
    ref_grads = _grads(model)
    model.zero_grad()
    fused = batch_logprobs(model, b, fused_head=True)
    (fused * g).sum().backward()
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[n], rtol=1e-5, atol=1e-6)
    assert "forward" not in vars(model.get_output_embeddings())     # the head is restored


def test_chunking_does_not_change_the_result():
    torch.manual_seed(3)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(90, 16, requires_grad=True)
    t = torch.randint(0, 90, (37,))
    whole = torch.log_softmax(h @ w.t(), -1).gather(-1, t[:, None]).squeeze(-1)
    gw, gh = torch.autograd.grad(whole.sum(), (w, h))
    for chunk in (1, 5, 37, 64):
        out = fused_token_logprobs(h, w, t, chunk_size=chunk)
        fw, fh = torch.autograd.grad(out.sum(), (w, h))
        torch.testing.assert_close(out, whole, rtol=0, atol=1e-5)
        torch.testing.assert_close(fw, gw, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fh, gh, rtol=1e-5, atol=1e-5)


def test_fused_under_bf16_autocast_matches_plain():
    """Under autocast both paths do the same bf16 matmul and the same float32 log-softmax: bitwise
    equal (a float32 matmul, or a bf16 log-softmax, in either path would differ by ~1e-2)."""
    model, b = _model(True, vocab=3000), _batch(vocab=3000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = batch_logprobs(model, b)
        fused = batch_logprobs(model, b, fused_head=True)
    assert fused.dtype == plain.dtype == torch.float32
    assert torch.equal(fused, plain), float((fused - plain).abs().max())


def test_unsupported_models_are_named():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=16, n_layer=1, n_head=2))
    assert "gpt2" in fused_supported(gpt2)
    assert fused_supported(_model(True)) is None
