"""Expected peak memory per GPU of a training recipe under its launch, worked out before anything starts.

Pure arithmetic on the model's architecture numbers (a config.json: shipped beside the paper recipes,
or cached), the recipe (precision, block size, micro-batch, checkpointing, LM head) and the launch
(processes, machines, FSDP full shard, CPU offload). `iwsft train RECIPE --check` and the paper preset
print it and refuse a plan that does not fit.

What is counted (bytes; P parameters, T = micro_batch_size x block_size tokens, every micro-batch at
full length, the worst case):
- weights, gradients and AdamW's two states, in the master dtype (float32 unless dtype=bf16), divided
  by the processes under FSDP full shard; on CPU RAM instead under FSDP CPU offload;
- FSDP2's unsharded parameters in flight (accelerate's wrapping: one group per decoder layer, the
  current and the prefetched one, and the LM head's group, kept unsharded from forward to backward)
  and one layer's unsharded gradient before its reduce-scatter; under one process or DDP with
  bf16-mixed, autocast's bf16 copies of the weights (cached for the whole forward and backward);
- the tensors autograd saves per decoder layer (HF Llama/Qwen2 layer with SDPA/flash attention: two
  RMSNorms, q/k/v after RoPE, attention output and log-sum-exp, four MLP intermediates; derived
  tensor by tensor in `_layer_bytes_per_token`), for every layer, or, with activation checkpointing,
  each layer's input plus one layer recomputed in backward;
- the LM head: plain, the [T x vocab] logits and their gradient at the start of backward; fused
  (harness/training/fused_head.py), chunk buffers and a float32 head-weight gradient.
Gradients are zeroed with set_to_none: with one micro-batch a step they appear as backward reaches their
layer (the head's first), with accumulation they are whole from the second micro-batch on. Backward runs
outside autocast (trainer and bench), so its bf16 weight copies are freed as the forward ends except
what autograd saved (every layer's without checkpointing, the head's with it).
Peak = persistent + the largest of three moments: the start of backward (all saved activations, the
head's backward), the backward of the top layer (all saved inputs, the head's gradient, one layer
recomputed) and that of the bottom layer (the whole gradient, one layer recomputed). Not counted: the CUDA context, NCCL buffers and allocator fragmentation: the
plan must fit in FIT_FRACTION of the GPU's memory to leave room for them.

Accuracy: checked against torch's MemTracker at tiny shapes on CPU (tests/test_memory_plan.py) and against
every committed eager H200 row of reports/bench/ (0-10% above each; tests/test_memory_plan_h200.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.core.errors import UserError

GiB = 2**30
FIT_FRACTION = 0.90           # of the GPU's memory; the rest: CUDA context, NCCL buffers, fragmentation
DEFAULT_GPU_GIB = 80.0        # H100 80 GB
WORKSPACE = 256 * 2**20      # bytes per GPU: cuBLAS workspaces, kernels' scratch
LOGITS_CHUNK = 1024           # harness.training.objective.token_logprobs
FUSED_CHUNK = 2048            # harness.training.fused_head.fused_token_logprobs


@dataclass(frozen=True)
class Architecture:
    """The numbers of a decoder-only Llama/Qwen2-style model that memory depends on."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool
    source: str = ""

    @classmethod
    def from_config(cls, d: dict, source: str = "") -> "Architecture":
        d = d.get("text_config", d)
        try:
            hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
            return cls(hidden=hidden, intermediate=int(d["intermediate_size"]), layers=int(d["num_hidden_layers"]),
                       heads=heads, kv_heads=int(d.get("num_key_value_heads") or heads),
                       head_dim=int(d.get("head_dim") or hidden // heads), vocab=int(d["vocab_size"]),
                       tied=bool(d.get("tie_word_embeddings", False)),
                       qkv_bias=d.get("model_type") == "qwen2" or bool(d.get("attention_bias", False)), source=source)
        except KeyError as e:
            raise UserError(f"{source or 'model config'} has no {e.args[0]!r}; give model_config=PATH to the model's "
                            "config.json (Hugging Face format)") from None

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    def layer_params(self) -> int:
        h, q, kv = self.hidden, self.q_dim, self.kv_dim
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
        return attn + 3 * h * self.intermediate + 2 * h

    def n_params(self) -> int:
        embed = self.vocab * self.hidden
        return self.layers * self.layer_params() + self.hidden + embed * (1 if self.tied else 2)


@dataclass(frozen=True)
class Launch:
    """How many processes, on how many machines, sharded how."""

    processes: int = 1
    machines: int = 1
    fsdp: bool = False            # FSDP full shard (accelerate's FSDP2 config); else one process or DDP
    offload: bool = False         # FSDP CPU offload (fsdp_offload_params)
    gpu: bool = False             # the processes run on GPUs (what dtype=auto resolves against)
    source: str = "one process"

    @property
    def per_node(self) -> int:
        return -(-self.processes // self.machines)

    def describe(self) -> str:
        kind = "GPU" if self.gpu else "CPU"
        if self.processes == 1 and not self.fsdp:
            return f"one {kind} process"
        how = "FSDP full shard" + (" + CPU offload" if self.offload else "") if self.fsdp else "DDP"
        nodes = f"{self.machines} nodes x {self.per_node}" if self.machines > 1 else f"{self.processes}"
        return f"{nodes} {kind} processes, {how} ({self.source})"


def _truthy(v) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes")


def launch_from_accelerate_config(path: str | Path) -> Launch:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"accelerate config {p} does not exist; give accelerate_config=PATH (recipes/table1/ has them)")
    d = yaml.safe_load(p.read_text()) or {}
    fsdp = d.get("distributed_type") == "FSDP"
    fc = d.get("fsdp_config") or {}
    if fsdp and str(fc.get("fsdp_sharding_strategy", "FULL_SHARD")).upper() not in ("FULL_SHARD", "1"):
        raise UserError(f"{p}: the memory plan knows FSDP full shard only; set fsdp_sharding_strategy: FULL_SHARD")
    return Launch(processes=int(d.get("num_processes") or 1), machines=int(d.get("num_machines") or 1), fsdp=fsdp,
                  offload=fsdp and _truthy(fc.get("fsdp_offload_params", False)), gpu=not d.get("use_cpu", False),
                  source=p.name)


def launch_from_env(env=os.environ) -> Launch | None:
    """The launch this process is part of (`accelerate launch` / torchrun set these), or None."""
    if "WORLD_SIZE" not in env:
        return None
    import torch

    world = int(env["WORLD_SIZE"])
    per_node = int(env.get("LOCAL_WORLD_SIZE") or world)
    fsdp = _truthy(env.get("ACCELERATE_USE_FSDP", "false"))
    return Launch(processes=world, machines=max(1, world // per_node), fsdp=fsdp,
                  offload=fsdp and _truthy(env.get("FSDP_OFFLOAD_PARAMS", "false")), gpu=torch.cuda.is_available(),
                  source="this launch's environment")


@dataclass(frozen=True)
class Row:
    name: str
    gpu: float          # bytes per GPU
    cpu: float = 0.0    # bytes of CPU RAM per node
    note: str = ""


@dataclass
class Plan:
    arch: Architecture
    launch: Launch
    precision: str
    tokens: int
    rows: list[Row]
    peak: float                        # bytes per GPU
    cpu_per_node: float                # bytes
    gpu_memory: float                  # bytes per GPU
    cpu_memory: float | None = None    # bytes per node, when known
    settings: dict = field(default_factory=dict)

    @property
    def budget(self) -> float:
        return FIT_FRACTION * self.gpu_memory

    @property
    def fits_gpu(self) -> bool:   # CPU processes: their RAM, not a GPU's memory, is what they use
        return not self.launch.gpu or self.peak <= self.budget

    @property
    def fits_cpu(self) -> bool:
        return self.cpu_memory is None or self.cpu_per_node <= self.cpu_memory

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_cpu

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def summary(self) -> str:
        if not self.launch.gpu:
            return f"peak {self.peak / GiB:.1f} GiB per process (CPU processes: not checked against a GPU)"
        s = (f"peak {self.peak / GiB:.1f} GiB per GPU of {self.budget / GiB:.1f} usable "
             f"({FIT_FRACTION:.0%} of {self.gpu_memory / GiB:.0f} GiB)")
        if self.launch.offload:
            s += f"; CPU RAM {self.cpu_per_node / GiB:.0f} GiB per node" + (
                f" of {self.cpu_memory / GiB:.0f}" if self.cpu_memory is not None else "")
        return s


def _bytes(precision: str) -> tuple[int, int]:
    """(master weight bytes, compute bytes) per element."""
    return {"fp32": (4, 4), "bf16-mixed": (4, 2), "bf16": (2, 2)}[precision]


def _layer_bytes_per_token(a: Architecture, r: int, c: int) -> int:
    """Bytes autograd saves per token in one decoder layer. r: the residual stream's dtype (bf16 under
    FSDP2's bf16 policy, float32 when autocast runs on float32 weights); c: the matmuls' output dtype.
    Each RMSNorm: its float32 input (4H), 1/rms (4), the normalised input cast back to r (rH) for the
    weight product, the product in c for the next matmuls (cH; when autocast casts a float32 product,
    it does so once per matmul: q, k, v and gate, up, 5 cH in all). Attention: q and k after RoPE, v,
    the output (c each; the output doubles as o_proj's input), float32 log-sum-exp per head. MLP: gate,
    up, silu(gate), their product (c x intermediate each)."""
    norms = 2 * (4 * a.hidden + 4 + r * a.hidden) + c * a.hidden * (2 if r == c else 5)
    attention = c * (2 * a.q_dim + 2 * a.kv_dim) + 4 * a.heads
    return norms + attention + 4 * c * a.intermediate


def _chunk_peak(rows: int, chunk: int, cur: int, prev: int) -> int:
    """Bytes per vocabulary entry at the worst moment of a chunked backward loop: the current chunk's
    buffers (`cur` bytes per row) while the previous chunk's gradient (`prev` per row) is still bound."""
    sizes = [min(chunk, rows - s) for s in range(0, rows, chunk)] or [0]
    return max(cur * n + prev * (sizes[i - 1] if i else 0) for i, n in enumerate(sizes))


def plan(arch: Architecture, launch: Launch, *, dtype: str = "auto", micro_batch_size: int = 1, block_size: int = 2048,
         gradient_checkpointing: bool = False, fused_lm_head: bool = False, gpu_memory_gib: float | None = None,
         cpu_memory_gib: float | None = None, global_batch_size: int | None = None) -> Plan:
    precision = ("bf16-mixed" if launch.gpu else "fp32") if dtype == "auto" else dtype
    m, c = _bytes(precision)
    fsdp_mixed = launch.fsdp and precision == "bf16-mixed"
    r = 2 if (precision == "bf16" or fsdp_mixed) else 4
    P, L, H, V = arch.n_params(), arch.layers, arch.hidden, arch.vocab
    T = micro_batch_size * block_size
    S = launch.processes if launch.fsdp else 1
    where = "CPU RAM (offload)" if launch.offload else ""
    shard = f"/ {S} processes" if S > 1 else "not sharded"
    state = {"weights": P * m / S, "gradients": P * m / S, "optimizer states": 2 * P * m / S}
    notes = {"weights": f"{P / 1e9:.2f}B params x {m} B ({'float32' if m == 4 else 'bf16'} master) {shard}",
             "gradients": f"{m} B per param {shard}" + (
                 "; accumulated over micro-batches: whole from the second one on" if global_batch_size is None or
                 global_batch_size > micro_batch_size * launch.processes else
                 "; one micro-batch a step, zeroed with set_to_none: whole only at the end of backward"),
             "optimizer states": f"AdamW exp_avg + exp_avg_sq, 2 x {m} B {shard}"}
    rows = [Row(k, 0.0 if launch.offload else v, v * launch.per_node if launch.offload else 0.0,
                notes[k] + (f"; on {where}" if launch.offload else "")) for k, v in state.items()]
    grads = 0.0 if launch.offload else P * m / S
    # Gradient accumulation: from the second micro-batch of a step on, every gradient exists before backward.
    accumulates = global_batch_size is None or global_batch_size > micro_batch_size * launch.processes
    if launch.processes > 1 and not launch.fsdp:
        rows.append(Row("DDP gradient buckets", P * m, 0.0, "a second copy of the gradients (gradient_as_bucket_view off)"))

    head_params = V * H + H
    if launch.fsdp:
        inflight = (2 * arch.layer_params() + head_params) * c
        rows.append(Row("unsharded parameters", inflight, 0.0,
                        f"2 decoder layers (current + prefetched) and the LM head group, {c} B each"))
    elif precision == "bf16-mixed":
        # Backward runs outside autocast, so its cast cache is freed when the forward ends; what stays is what
        # autograd saved: every layer's copy without checkpointing, only the LM head's with it.
        copies = (head_params if gradient_checkpointing else P) * 2
        rows.append(Row("autocast weight copies", copies, 0.0,
                        "bf16 casts saved for backward: " + ("the LM head's (checkpointed layers recast in their "
                                                             "recompute)" if gradient_checkpointing else "all weights")))

    if launch.gpu:   # allocated through torch's allocator, so in its peak; no formula of ours covers them
        rows.append(Row("workspaces", WORKSPACE, 0.0, "cuBLAS workspaces and kernels' scratch (the H200 rows: "
                                                        "1.5B/8k without checkpointing measured 0.11 GiB over the rest)"))
    per_layer = _layer_bytes_per_token(arch, r, c) * T
    rope = 2 * r * arch.head_dim * T
    final_norm = (4 * H + 4 + r * H + c * H) * T
    if gradient_checkpointing:
        saved = L * r * H * T
        rows.append(Row("saved activations", saved + rope + final_norm, 0.0,
                        f"checkpointing: {L} layer inputs x {T} tokens x {H} x {r} B (+ final norm, RoPE)"))
    else:
        saved = L * per_layer
        rows.append(Row("saved activations", saved + rope + final_norm, 0.0,
                        f"no checkpointing: {L} layers x {per_layer / T / 1024:.1f} KiB per token x {T} tokens"))
    grad_h = T * H * c
    lp_rows = micro_batch_size * (block_size - 1)   # next-token log-probs
    if fused_lm_head:
        head_saved = 4 * T
        # float32 chunk buffers: logits - lse and its exp (8 B), beside the previous chunk's gradient (c)
        head_bwd = _chunk_peak(lp_rows, FUSED_CHUNK, 8, c) * V + V * H * 4 + grad_h
        rows.append(Row("LM head (fused)", head_saved + head_bwd, 0.0,
                        f"backward: {FUSED_CHUNK}-token chunks of logits, a float32 head gradient, no [T x vocab] tensor"))
    else:
        head_saved = T * V * c + 4 * T
        # the logits' gradient, and float32 chunk buffers: logits - lse and its exp, beside the previous
        # chunk's float32 gradient
        head_bwd = T * V * c + _chunk_peak(lp_rows, LOGITS_CHUNK, 8, 4) * V + grad_h
        rows.append(Row("LM head logits", head_saved + head_bwd, 0.0,
                        f"[{T} x {V}] logits and their gradient, {c} B each (fused_lm_head=true avoids both)"))
    # Backward of one layer: the gradients of its MLP intermediates (three of c x intermediate live at
    # once) and of the residual stream; under FSDP its unsharded gradient before the reduce-scatter.
    # Two of c x intermediate: the third (silu(gate)'s) is computed from a freed buffer (measured on the H200 rows).
    layer_bwd = T * (2 * c * arch.intermediate + 2 * r * H) + (arch.layer_params() * c if launch.fsdp else 0)
    recompute = per_layer if gradient_checkpointing else 0
    rows.append(Row("one layer in backward", recompute + layer_bwd, 0.0,
                    ("recomputed activations + " if gradient_checkpointing else "") + "its backward buffers"
                    + (" + its unsharded gradient" if launch.fsdp else "")))

    persistent = sum(x.gpu for x in rows if x.name not in
                     ("gradients", "saved activations", "LM head (fused)", "LM head logits", "one layer in backward"))
    act = saved + rope + final_norm
    head_grad = 0.0 if launch.offload else head_params * m / S
    if accumulates:   # the whole gradient is there before backward starts: count it at every moment
        persistent += grads
        grads = head_grad = 0.0
    # Three moments of backward (set_to_none: gradients appear as backward reaches their layer):
    start_of_backward = act + head_saved + head_bwd + (0.0 if fused_lm_head else head_grad)   # fused: in its row
    top_layer = act + head_grad + recompute + layer_bwd                  # the last layer's backward, head done
    last_layer = grads + (r * H * T if gradient_checkpointing else per_layer) + rope + recompute + layer_bwd
    peak = persistent + max(start_of_backward, top_layer, last_layer)

    # CPU RAM per node: what offload moves, the full float32 model rank 0 of each node loads before
    # sharding (cpu_ram_efficient_loading), and the full state dict gathered on rank 0 at each save.
    load = P * m
    cpu = sum(x.cpu for x in rows) + load
    rows.append(Row("CPU: model load / checkpoint gather", 0.0, load, "full weights on each node's rank 0 at start and at saves"))
    if gpu_memory_gib is None:
        gpu_memory_gib = _detected_gpu_gib() or DEFAULT_GPU_GIB
    if cpu_memory_gib is None:
        cpu_memory_gib = _detected_cpu_gib()
    return Plan(arch, launch, precision, T, rows, peak, cpu, gpu_memory_gib * GiB,
                None if cpu_memory_gib is None else cpu_memory_gib * GiB,
                settings=dict(dtype=dtype, micro_batch_size=micro_batch_size, block_size=block_size,
                              gradient_checkpointing=gradient_checkpointing, fused_lm_head=fused_lm_head,
                              gpu_memory_gib=gpu_memory_gib, cpu_memory_gib=cpu_memory_gib,
                              global_batch_size=global_batch_size))


def _detected_gpu_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GiB


def _detected_cpu_gib() -> float | None:
    """This node's RAM, only where GPUs are visible: planning on a laptop says nothing about the cluster."""
    import torch

    if not torch.cuda.is_available():
        return None
    import psutil

    return psutil.virtual_memory().total / GiB


# ------------------------------------------------------------------------------------------ a recipe's plan

def architecture_for(cfg) -> Architecture | None:
    """The recipe's model_config, else the model's config.json from a local folder, the embedded alias's
    cache or the hub cache; None when none is on this machine (nothing is downloaded)."""
    if cfg.model_config:
        p = Path(cfg.model_config)
        if not p.is_file():
            raise UserError(f"model_config {p} does not exist; point it at the model's config.json")
        try:
            return Architecture.from_config(json.loads(p.read_text()), p.name)
        except json.JSONDecodeError as e:
            raise UserError(f"model_config {p} is not valid JSON ({e.msg}); point it at the model's config.json") from None
    local = Path(cfg.model).expanduser()
    candidates = [local / "config.json"]
    from harness.core.models import ALIASES, cache_root

    if cfg.model.lower() in ALIASES:
        candidates.append(cache_root() / "models" / cfg.model.lower() / "config.json")
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(cfg.model, "config.json")
            if isinstance(hit, str):
                candidates.append(Path(hit))
        except Exception:   # not a hub id: nothing cached
            pass
    for c in candidates:
        if c.is_file():
            return Architecture.from_config(json.loads(c.read_text()), str(c))
    return None


def recipe_launch(cfg, accelerate_config: str | None = None) -> Launch:
    """The launch a recipe plans for: this process's own launch when it is part of one, else the
    accelerate config given (the paper preset's), else the recipe's accelerate_config, else one process."""
    import torch

    env = launch_from_env()
    if env is not None:
        return env
    path = accelerate_config or cfg.accelerate_config
    if path:
        return launch_from_accelerate_config(path)
    return Launch(gpu=torch.cuda.is_available())


def plan_recipe(cfg, accelerate_config: str | None = None, launch: Launch | None = None) -> Plan | None:
    arch = architecture_for(cfg)
    if arch is None:
        return None
    launch = launch or recipe_launch(cfg, accelerate_config)
    return plan(arch, launch, dtype=cfg.dtype, micro_batch_size=cfg.micro_batch_size, block_size=cfg.block_size,
                gradient_checkpointing=cfg.gradient_checkpointing, fused_lm_head=cfg.fused_lm_head,
                gpu_memory_gib=cfg.gpu_memory_gib, cpu_memory_gib=cfg.cpu_memory_gib, global_batch_size=cfg.global_batch_size)


def _replan(p: Plan, launch: Launch | None = None, **settings) -> Plan:
    return plan(p.arch, launch or p.launch, **{**p.settings, **settings})


def fixes(p: Plan) -> list[str]:
    """Single changes (then pairs) under which the plan fits, cheapest first, each with its peak."""
    L = p.launch
    moves: list[tuple[str, dict, Launch | None]] = []
    if not p.settings["fused_lm_head"]:
        moves.append(("fused_lm_head=true", {"fused_lm_head": True}, None))
    if not p.settings["gradient_checkpointing"]:
        moves.append(("gradient_checkpointing=true", {"gradient_checkpointing": True}, None))
    if p.settings["micro_batch_size"] > 1:
        moves.append(("micro_batch_size=1 (more accumulation)", {"micro_batch_size": 1}, None))
    if L.fsdp and not L.offload:
        moves.append(("fsdp_offload_params: true in the accelerate config", {}, replace(L, offload=True)))
    if L.gpu and L.fsdp:
        two = replace(L, processes=2 * L.processes, machines=2 * L.machines)
        moves.append((f"{two.machines} nodes x {two.per_node} GPUs (recipes/table1/accelerate_fsdp_2x8xh100.yaml)", {}, two))
    elif L.gpu:   # the config it names offloads: planned as shipped
        moves.append((f"FSDP full shard + CPU offload over {max(L.processes, 8)} GPUs (recipes/table1/accelerate_fsdp_8xh100.yaml)",
                      {}, replace(L, fsdp=True, offload=True, processes=max(L.processes, 8))))
    gb = p.settings["global_batch_size"]
    moves = [mv for mv in moves if mv[2] is None or not gb or gb % (p.settings["micro_batch_size"] * mv[2].processes) == 0]
    out = []
    for name, s, launch in moves:
        q = _replan(p, launch, **s)
        if q.fits:
            out.append(f"{name} ({q.summary()})")
    if out:
        return out
    for i, (n1, s1, l1) in enumerate(moves):
        for n2, s2, l2 in moves[i + 1:]:
            if l1 is not None and l2 is not None:
                continue
            q = _replan(p, l1 or l2, **{**s1, **s2})
            if q.fits:
                out.append(f"{n1} and {n2} ({q.summary()})")
    return out


def refusal(p: Plan) -> str:
    what = []
    if not p.fits_gpu:
        what.append(f"{p.peak / GiB:.1f} GiB per GPU > {p.budget / GiB:.1f} GiB usable "
                    f"({FIT_FRACTION:.0%} of {p.gpu_memory / GiB:.0f} GiB; gpu_memory_gib sets it)")
    if not p.fits_cpu:
        what.append(f"CPU offload needs {p.cpu_per_node / GiB:.0f} GiB of RAM per node > {p.cpu_memory / GiB:.0f} GiB here")
    fx = fixes(p)
    fix = ("; fits with: " + "; or ".join(fx[:3])) if fx else "; no single setting fits: lower block_size or use more GPUs"
    return f"memory plan does not fit ({p.launch.describe()}, block {p.settings['block_size']}): " + ", ".join(what) + fix


def check(p: Plan) -> None:
    """UserError (one line: the problem and the fix) when the launch cannot run as planned."""
    import torch

    if p.launch.gpu and torch.cuda.is_available() and p.launch.per_node > torch.cuda.device_count():
        raise UserError(f"the launch asks for {p.launch.per_node} processes per node ({p.launch.source}) but this node "
                        f"has {torch.cuda.device_count()} GPUs; set num_processes to {torch.cuda.device_count()} x nodes")
    gb, mb = p.settings["global_batch_size"], p.settings["micro_batch_size"]
    if gb and gb % (mb * p.launch.processes):
        raise UserError(f"global_batch_size {gb} is not divisible by micro_batch_size x processes ({mb} x "
                        f"{p.launch.processes}, {p.launch.source}); set global_batch_size to a multiple of "
                        f"{mb * p.launch.processes} or launch fewer processes")
    if not p.fits:
        raise UserError(refusal(p))


def table(p: Plan):
    """A rich Table of the plan."""
    from rich.table import Table

    t = Table(title=f"memory plan: {p.arch.source or 'model'} ({p.arch.n_params() / 1e9:.2f}B params), {p.precision}, "
                    f"{p.tokens} tokens per micro-batch; {p.launch.describe()}", title_justify="left")
    t.add_column("component")
    t.add_column("GiB per GPU", justify="right")
    t.add_column("GiB CPU RAM per node", justify="right")
    t.add_column("what")
    for r in p.rows:
        t.add_row(r.name, f"{r.gpu / GiB:.2f}" if r.gpu else "", f"{r.cpu / GiB:.1f}" if r.cpu else "", r.note)
    t.add_row("[bold]peak[/]", f"[bold]{p.peak / GiB:.2f}[/]", f"[bold]{p.cpu_per_node / GiB:.1f}[/]",
              "persistent + max(start of backward, top layer's backward, last layer's backward)")
    return t
