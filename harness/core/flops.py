"""Model FLOPs and MFU by the field's convention (torchtitan's), shared by `iwsft train`, `iwsft bench`
and `iwsft bench-report`, so every MFU this harness prints means the same thing.

Per trained token, following torchtitan (`get_dense_model_nparams_and_flops`) exactly:
    6 x N_dense + 12 x layers x heads x head_dim x seq
N_dense: the parameters that do matmuls per token, i.e. all of them less an input embedding table that is
not also the output layer (torchtitan subtracts its nn.Embedding; a tied table is the LM head, counted
once). 12 = (2 forward + 4 backward attention matmuls) x 2 FLOPs per multiply-add; flash attention's
recomputation is not counted, and, as torchtitan says, "we follow the convention and do not account for
sparsity in causal attention": seq is the full length, not halved. Packed rows: each document attends to
itself only, so each token counts its own document's length (a step's attention FLOPs are
12 x layers x heads x head_dim x sum of length^2). Padding counts nothing. Activation checkpointing's
recomputed forward is not counted (MFU, not hardware FLOPs utilisation).

The peak is the card's dense bf16 spec (989 TFLOP/s for H100 and H200 SXM, as torchtitan and the vendors
quote), not a measured matmul rate: a measured rate (`matmul_tflops`) is printed beside it where known.
"""

from __future__ import annotations

CONVENTION = ("torchtitan: 6 x params (less an untied input embedding) + 12 x layers x heads x head_dim x seq "
              "per token, seq = each document's own length, causal attention not halved; over the card's dense "
              "bf16 spec peak")

# Dense bf16 spec peaks (TFLOP/s, no sparsity), most specific name first.
SPEC_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("H100", 989.0),
                    ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0))


def spec_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 spec peak of a card by its torch device name, None when unknown."""
    for key, tf in SPEC_PEAK_TFLOPS:
        if key in device_name:
            return tf
    return None


def attention_flops_per_token_per_seq(layers: int, heads: int, head_dim: int) -> int:
    """The attention term's coefficient: attention FLOPs of one token = this x its sequence's length."""
    return 12 * layers * heads * head_dim


def step_flops(dense_per_token: float, attn_coeff: int, lengths) -> float:
    """Model FLOPs of one step over sequences (documents) of these lengths."""
    lengths = list(lengths)
    return dense_per_token * sum(lengths) + attn_coeff * sum(n * n for n in lengths)


def dense_params(model) -> int:
    """N_dense of a Hugging Face causal LM: every parameter less an input embedding not shared with the output."""
    n = sum(p.numel() for p in model.parameters())
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    if emb is not None and (out is None or out.weight is not emb.weight):
        n -= emb.weight.numel()
    return n


def attn_coeff_of(config) -> int:
    """attention_flops_per_token_per_seq from a transformers config."""
    c = getattr(config, "text_config", None) or config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return attention_flops_per_token_per_seq(c.num_hidden_layers, heads, head_dim)


def matmul_tflops(device, n: int = 8192, iters: int = 20, dtype=None) -> float:
    """A measured dense matmul rate (bf16 on a GPU): printed beside the spec peak, never divided by."""
    import time

    import torch

    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12
