"""Training recipes: one config type (`TrainConfig`), loaded from YAML plus `key=value` overrides.

Every field is documented below (and again in each shipped recipe's comments). Unknown keys are
rejected with the closest valid name, and incompatible options fail before anything is loaded.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import UserError
from harness.training.objective import PRESETS, WeightSpec, preset
from harness.training.qsource import Q_SOURCES


@dataclass
class TrainConfig:
    # --- model and data -------------------------------------------------------------------------
    model: str = "smollm2-135m"
    """Policy to fine-tune, and the reference pi_ref (= theta_0): local HF dir, hub id or `smollm2-135m`."""
    dataset: str = "simplescaling/s1K-1.1"
    """Curated data: a hub dataset id, or a local .jsonl / .parquet / .json file."""
    dataset_split: str = "train"
    """Split to use when `dataset` is a hub id."""
    data_format: str = "auto"
    """auto (from the columns: `messages`, else `prompt` + `completion`, else the s1 columns below) | s1 |
    messages (chat turns; every assistant turn carries loss) | prompt_completion (TRL's: two strings, no
    template, eos appended; or two message lists, the completion's assistant turns carry loss). Chat
    data's loss mask comes from the tokenizer's chat template (harness/training/chat_data.py)."""
    chat_template: str | None = None
    """A Jinja chat template file replacing the tokenizer's for chat data, saved with the checkpoints (as
    TRL's chat_template_path): e.g. a training template that keeps the reasoning of assistant turns where
    the model's own drops it (DeepSeek-R1's renders a turn without the text up to </think>)."""
    question_column: str = "question"
    """Column holding the problem statement."""
    thinking_column: str = "deepseek_thinking_trajectory"
    """Column holding the reasoning trace (s1K-1.1: deepseek_thinking_trajectory or gemini_thinking_trajectory)."""
    answer_column: str = "deepseek_attempt"
    """Column holding the final attempt (s1K-1.1: deepseek_attempt or gemini_attempt)."""
    completion_column: str | None = None
    """Column holding a sampled response verbatim (the text generated after the think prefix, answer
    section included), as `iwsft curate` writes it; when set, thinking/answer columns are not used,
    so training sees exactly the tokens the reference model sampled. The think prefix, which was part of the
    sampling prompt, then goes on the prompt side (no loss)."""
    forced_column: str | None = None
    """With completion_column: a column of [start, end] character spans of the response that the sampler
    forced rather than sampled (`iwsft curate` writes `forced_spans`: the close after thinking). They
    carry no loss and no importance weight, so training sees only what the policy generated."""
    think_prefix: str = "<|im_start|>think"
    """Opens the thinking section; the loss starts here (docs/method.md#training-data-format)."""
    answer_prefix: str = "<|im_start|>answer"
    """Opens the answer section, followed by "\\nAnswer: {attempt}"."""
    block_size: int = 2048
    """Maximum tokens per example (prompt + response)."""
    truncation: str = "truncate"
    """`truncate`: right-truncate examples over block_size (the reference run; the answer is lost) or `drop` them."""
    score_column: str | None = None
    """Optional quality score column: enables the SFT(Q) percentile oversampling below."""
    quality_percentiles: list[float] = field(default_factory=lambda: [90.0, 95.0, 98.0])
    """SFT(Q): examples at or above each percentile of the score are included once per cutoff they pass."""

    # --- objective --------------------------------------------------------------------------------
    weighting: str = "sft"
    """Objective preset: sft | iw-sft (released code) | iw-sft-paper (paper text) | per-step."""
    weighting_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields of the preset to override, e.g. {w_clip: [0, 8], self_normalize: true} (see harness/training/objective.py)."""
    loss_normalization: str = "micro_batch"
    """What a micro-batch's summed loss is divided by: `micro_batch` (its own response tokens, or sequences
    with loss_norm: sequences; the released code and s1, both at micro-batch 1) or `accumulation_window`
    (the tokens of the whole optimizer step over every micro-batch and process, as transformers >= 4.46
    does with gradient accumulation). The same at micro_batch_size 1 with one micro-batch per step."""
    q_source: str = "lag0"
    """Where pi_q comes from: lag0 (current policy, no extra forward) | periodic | ema."""
    q_every: int = 1
    """periodic: theta_q <- theta every q_every optimizer steps."""
    q_ema_decay: float = 0.9
    """ema: theta_q <- a * theta_q + (1 - a) * theta after each step."""
    ref_cache_dir: str | None = None
    """Where cached reference log-probs live (default: $IWSFT_CACHE/ref or ~/.cache/iwsft/ref)."""

    # --- optimisation -----------------------------------------------------------------------------
    learning_rate: float = 1e-5
    """Peak learning rate of AdamW."""
    adam_beta1: float = 0.9
    """AdamW beta1 (first-moment decay), in [0, 1)."""
    adam_beta2: float = 0.95
    """AdamW beta2 (second-moment decay), in [0, 1); 0.95 as s1 and the released iw-SFT code."""
    weight_decay: float = 1e-4
    """AdamW decoupled weight decay (>= 0)."""
    decay_biases_and_norms: bool = False
    """False: no weight decay on biases and normalisation weights, the rule of transformers' Trainer that
    s1 and the released iw-SFT code train with. True: decay every parameter (this harness before 2026-11-30)."""
    warmup_ratio: float = 0.05
    """Linear warm-up over this fraction of the steps, then cosine decay to 0."""
    warmup_start: str = "zero"
    """Where the linear warm-up starts. zero: the first optimizer step runs at learning rate 0 (it only fills
    AdamW's moments; the weights do not move), as transformers' get_cosine_schedule_with_warmup under its
    Trainer, which s1 and the released iw-SFT code train with: the paper recipes keep it. first-step: the
    first step runs at learning_rate / warm-up steps and the warm-up reaches the full rate one step earlier,
    so a short run (a demo, max_steps=2) moves the weights from step 1."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this before each step (.inf: no clipping)."""
    num_epochs: float = 5.0
    """Passes over the (oversampled) data; fractional values stop mid-epoch."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides num_epochs for the schedule's length)."""
    micro_batch_size: int = 1
    """Sequences per forward pass per process (padding is handled exactly)."""
    packing: bool = False
    """Put a micro-batch's sequences end to end in one row instead of padding them (same examples,
    same loss; no compute spent on padding). Attention stays inside each example through position
    ids (needs transformers >= 5). Pays with micro_batch_size > 1 and unequal lengths."""
    global_batch_size: int = 8
    """Sequences per optimizer step across all processes; = micro_batch * grad_accum * processes."""
    seed: int = 42
    """Seeds model-independent randomness and the data order (per epoch)."""
    dtype: str = "auto"
    """auto (bf16-mixed on GPU, fp32 on CPU) | bf16-mixed (float32 master weights, bf16 autocast, on any
    device: what GPUs run, also testable on CPU) | bf16 (weights themselves in bf16) | fp32."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in backward: about a third more compute, far less memory."""
    fused_lm_head: bool = False
    """Compute log-probs from the hidden states chunk by chunk (harness/training/fused_head.py): the
    [tokens x vocab] logits and their gradient never exist whole (20 GB at 32k x 152k in bf16), for
    one extra head matmul. Same numbers as the plain path; one process, DDP or FSDP2 (not FSDP1)."""
    fused_head_compile: bool = False
    """With fused_lm_head=true: torch.compile each chunk's forward (logits -> float32 log-sum-exp -> target)
    and backward (softmax gradient -> hidden and head gradients) instead of eager's chain of float32
    elementwise passes; the chunk loop stays (no [tokens x vocab] tensor is kept for backward). Same numbers to rounding (the
    reference cache is its own); the first steps pay the compile time. Not measured on a GPU yet
    (docs/performance.md)."""
    compile_layers: bool = False
    """torch.compile each decoder layer in place (regional compilation: one compiled graph serves
    every layer; parameter names and checkpoints unchanged). Fewer, fused kernels; the first steps
    pay the compile time. The reference cache then goes through the same compiled training graph, so
    step-0 weights stay exactly 1; needs q_source=lag0."""
    attention: str = "sdpa"
    """Attention kernel (harness/training/attention.py; `iwsft bench --attention` measures the same three):
    sdpa (torch picks: flash on Hopper; the model loads as it always did) | cudnn (SDPA restricted to cuDNN's
    kernel around every forward and backward, the reference pass included) | flex (the model loads with
    transformers' flex_attention, torch's FlexAttention: with packing=true transformers >= 5 reads each
    example's boundaries from the position ids, given without an attention mask, and builds a block mask,
    causal and within the example, so no [T x T] mask exists; padded rows get the padding in it). cudnn and
    flex need CUDA: training refuses them elsewhere in one line (cuDNN is CUDA-only; torch 2.13's FlexAttention
    has no backward on CPU); --check, which plans for the GPUs, notes it. Each is the same attention up to
    rounding (kernels sum in another order); the reference cache is kept per kernel, so step-0 weights stay
    exactly 1. Not measured in training yet: docs/performance.md."""

    # --- LoRA (harness/training/lora.py; needs the `lora` extra: peft) ------------------------------
    lora_rank: int | None = None
    """Train low-rank adapters of this rank instead of every weight (unset: full fine-tuning). The
    reference pi_ref is the base model (adapters off); checkpoints hold the adapter (PEFT format)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the adapter's update is (lora_alpha / lora_rank) * B A."""
    lora_dropout: float = 0.0
    """Dropout on the adapters' input, in [0, 1); B = 0 at the start, so step-0 weights stay exactly 1."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names (suffixes) that get adapters; ["all-linear"]: every linear layer but the output head."""
    lora_merge_on_save: bool = False
    """Also write base + adapter merged into `merged/` beside each saved adapter: a plain model folder that
    `iwsft eval` and vLLM load (e.g. iwsft eval --model OUTPUT_DIR/final/merged)."""

    # --- memory plan (iwsft train --check; harness/training/memory_plan.py) -------------------------
    model_config: str | None = None
    """The model's config.json (Hugging Face format) for planning memory offline; unset: the model's own,
    from a local folder or the hub cache. Relative paths are looked up beside the recipe first."""
    accelerate_config: str | None = None
    """The accelerate config the recipe is launched with (its processes, machines, FSDP and offload plan
    the memory); the launch command in the recipe's header names the same file. Inside a launch, the
    launch's own environment counts instead."""
    gpu_memory_gib: float | None = None
    """Memory of one GPU in GiB for the plan; unset: detected where CUDA is visible, else 80 (H100)."""
    cpu_memory_gib: float | None = None
    """CPU RAM of one node in GiB, checked against what CPU offload needs; unset: detected where CUDA is
    visible, else not checked (a laptop's RAM says nothing about the cluster's)."""

    # --- output -----------------------------------------------------------------------------------
    output_dir: str = "runs/train/default"
    """Run directory: checkpoints, metrics.jsonl, config.yaml."""
    save_every: int | None = None
    """Save a checkpoint every N optimizer steps (and always at the end)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep (the final model is always kept)."""
    resumable_checkpoints: int | None = 2
    """How many of the newest kept checkpoints keep the optimizer state a resume needs (two: a damaged newest
    one falls back to the one before). Older kept ones hold weights only, a third of the disk (AdamW's two
    moments are twice the weights in float32): enough for the accuracy-vs-step curve and `iwsft push`.
    null: every kept checkpoint stays resumable."""
    log_every: int = 1
    """Log a metrics line (loss, weights, tokens/s, MFU, memory) every N optimizer steps (and the last)."""
    log_with: list[str] = field(default_factory=list)
    """Experiment trackers (accelerate's) that get every scalar of metrics.jsonl, a histogram of the
    log-weights per logged step (TensorBoard, wandb, trackio; others skip it) and this config:
    tensorboard (output_dir/tb/<tracker_project>), mlflow (MLFLOW_TRACKING_URI), wandb, trackio; each must be
    installed (`pip install 'iwsft-harness[tensorboard]'`, `[mlflow]`). On the command line: log_with=tensorboard,mlflow."""
    tracker_project: str | None = None
    """The trackers' project (wandb/trackio project, MLflow experiment, TensorBoard subfolder); default `iwsft`.
    The run is named after output_dir's last folder."""
    tensorboard: bool = False
    """Deprecated: the same as adding tensorboard to log_with."""
    push_to_hub: str | None = None
    """Hub model repo (ORG/NAME) that `iwsft train` pushes to when training ends, with a model card (recipe,
    objective preset, data, harness commit): the final model to main, each push_steps checkpoint to a branch
    step-N. Needs a hub token (HF_TOKEN or `hf auth login`), checked before training. Or later: `iwsft push`."""
    push_steps: list[int] = field(default_factory=list)
    """Step checkpoints (multiples of save_every) to push too, each to its branch step-N; kept on disk past
    keep_checkpoints so they are there when training ends."""
    hub_private: bool = False
    """Create the push_to_hub repo private."""
    peak_tflops: float | None = None
    """One accelerator's peak TFLOP/s for MFU; MFU divides by it times the number of processes. Unset: the card's
    dense bf16 spec (989 on H100/H200 SXM; harness/core/flops.py states the convention), else MFU not shown."""

    def trackers(self) -> list[str]:
        """log_with, with the deprecated tensorboard=true folded in."""
        return list(dict.fromkeys([*self.log_with, *(["tensorboard"] if self.tensorboard else [])]))

    def weight_spec(self) -> WeightSpec:
        return preset(self.weighting, **self.weighting_overrides)

    def to_dict(self) -> dict:
        return asdict(self)


FIELD_NAMES = [f.name for f in fields(TrainConfig)]


def _coerce(name: str, value):
    """Check a value against the field's annotated type, converting YAML scalars where safe."""
    ann = {f.name: f.type for f in fields(TrainConfig)}[name]
    default = getattr(TrainConfig(), name)
    if value is None:
        if "None" in str(ann):
            return None
        raise UserError(f"recipe key {name!r} cannot be null; give a value like {default!r}")
    kinds = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict}
    for word, typ in kinds.items():
        if str(ann).startswith(word):
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if typ is float and isinstance(value, str):   # YAML 1.1 reads "1e-5" as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            if typ is int and isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
                return value
            example = default if default is not None else {"int": 2, "float": 1.0, "str": "text"}.get(word, default)
            raise UserError(f"recipe key {name!r} expects {word}, got {value!r}; e.g. {name}={example!r}")
    return value


# A bound on step counts: far beyond any run, well inside what the schedule's arithmetic handles.
MAX_COUNT = 10**9


def validate(cfg: TrainConfig) -> TrainConfig:
    """Fail fast on incompatible options, before any model or data is loaded."""
    if cfg.weighting not in PRESETS:
        raise UserError(f"weighting {cfg.weighting!r} is not one of {', '.join(PRESETS)}")
    try:
        cfg.weight_spec()   # validates the overrides
    except (TypeError, ValueError) as e:
        raise UserError(f"weighting_overrides {cfg.weighting_overrides!r} holds a value of the wrong type ({e}); "
                        "e.g. weighting_overrides={w_clip: [0, 16]}") from None
    spec = cfg.weight_spec()
    if spec.self_normalize and cfg.global_batch_size < 2:
        raise UserError("self_normalize divides each weight by the mean weight of its optimizer step; with "
                        "global_batch_size 1 every weight becomes 1 (plain SFT): raise global_batch_size or drop self_normalize")
    if spec.level == "sequence" and spec.reduce == "sum" and spec.w_clip is None and not spec.self_normalize:
        raise UserError(f"weighting {cfg.weighting!r} sums log-ratios over every response token (up to block_size "
                        f"{cfg.block_size}) with no overall clip: w overflows on long sequences; set "
                        "weighting_overrides={w_clip: [0, 16]} (the paper's beta clip) or {self_normalize: true}")
    if cfg.loss_normalization not in ("micro_batch", "accumulation_window"):
        raise UserError(f"loss_normalization {cfg.loss_normalization!r} is not one of micro_batch, accumulation_window")
    if cfg.q_source not in Q_SOURCES:
        raise UserError(f"q_source {cfg.q_source!r} is not one of {', '.join(Q_SOURCES)}")
    if cfg.weighting == "sft" and cfg.q_source != "lag0":
        raise UserError("q_source only matters for importance weighting; with weighting=sft leave q_source=lag0")
    if cfg.truncation not in ("truncate", "drop"):
        raise UserError(f"truncation {cfg.truncation!r} is not one of truncate, drop")
    if cfg.dtype not in ("auto", "bf16-mixed", "bf16", "fp32"):
        raise UserError(f"dtype {cfg.dtype!r} is not one of auto, bf16-mixed, bf16, fp32")
    for key in ("block_size", "micro_batch_size", "global_batch_size", "keep_checkpoints", "log_every", "q_every"):
        if getattr(cfg, key) < 1:
            raise UserError(f"{key} must be >= 1 (got {getattr(cfg, key)})")
    if cfg.global_batch_size % cfg.micro_batch_size:
        raise UserError(
            f"global_batch_size {cfg.global_batch_size} is not a multiple of micro_batch_size {cfg.micro_batch_size}"
        )
    if cfg.max_steps is not None and not 1 <= cfg.max_steps <= MAX_COUNT:
        raise UserError(f"max_steps must be an integer in [1, {MAX_COUNT:.0e}] (got {cfg.max_steps:.6g})")
    if cfg.resumable_checkpoints is not None and cfg.resumable_checkpoints < 1:
        raise UserError(f"resumable_checkpoints must be >= 1 or null (got {cfg.resumable_checkpoints})")
    if cfg.save_every is not None and cfg.save_every < 1:
        raise UserError(f"save_every must be >= 1 (got {cfg.save_every})")
    if not 0 <= cfg.seed < 2**63:      # torch.manual_seed takes 64 bits; a negative seed is a typo
        raise UserError(f"seed must be an integer in [0, 2**63) (got {cfg.seed:.6g}); e.g. seed=42")
    if not 0 <= cfg.warmup_ratio < 1:
        raise UserError(f"warmup_ratio must be in [0, 1) (got {cfg.warmup_ratio})")
    if cfg.warmup_start not in WARMUP_STARTS:
        raise UserError(f"warmup_start must be one of {', '.join(WARMUP_STARTS)} (got {cfg.warmup_start!r})")
    # Each check is written so that NaN fails it too.
    for key, ok, want in (("learning_rate", lambda v: 0 < v < math.inf, "> 0"),
                          ("num_epochs", lambda v: 0 < v < math.inf, "> 0"),
                          ("max_grad_norm", lambda v: v > 0, "> 0 (.inf: no clipping)"),
                          ("weight_decay", lambda v: 0 <= v < math.inf, ">= 0"),
                          ("adam_beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
                          ("adam_beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
                          ("q_ema_decay", lambda v: 0 <= v < 1, "in [0, 1)")):
        if not ok(getattr(cfg, key)):
            raise UserError(f"{key} must be {want} (got {getattr(cfg, key)})")
    for key in ("peak_tflops", "gpu_memory_gib", "cpu_memory_gib"):
        if getattr(cfg, key) is not None and not 0 < getattr(cfg, key) < math.inf:
            raise UserError(f"{key} must be > 0 (got {getattr(cfg, key)})")
    from harness.training.attention import check_name

    check_name(cfg.attention)     # whether this machine can run it is the trainer's check (--check plans for GPUs)
    if cfg.fused_head_compile and not cfg.fused_lm_head:
        raise UserError("fused_head_compile=true compiles the fused LM head's chunks; set fused_lm_head=true too, "
                        "or fused_head_compile=false")
    if cfg.compile_layers and cfg.q_source != "lag0":
        raise UserError(f"compile_layers=true needs q_source=lag0 (a {cfg.q_source} q copy would run another graph "
                        "than the reference, and step-0 weights would not be exactly 1); set one of them back")
    if cfg.push_steps:
        if not cfg.push_to_hub:
            raise UserError("push_steps picks checkpoints to push; set push_to_hub=ORG/NAME too, or drop push_steps")
        bad = [s for s in cfg.push_steps if not isinstance(s, int) or s < 1 or not cfg.save_every or s % cfg.save_every]
        if bad:
            raise UserError(f"push_steps {bad} are not saved checkpoints: each must be a multiple of save_every "
                            f"({cfg.save_every}); e.g. save_every=20 push_steps=[20,40]")
    from harness.core import trackers

    cfg.log_with = trackers.parse(cfg.log_with)
    trackers.check(cfg.trackers())      # a tracker not installed: refused before anything is written
    if cfg.chat_template is not None and not Path(cfg.chat_template).expanduser().is_file():
        raise UserError(f"chat_template {cfg.chat_template}: no such file; give a Jinja chat template file (e.g. "
                        "one of TRL's training templates) or unset it to use the tokenizer's own")
    from harness.training.chat_data import FORMATS

    if cfg.data_format not in FORMATS:
        raise UserError(f"data_format {cfg.data_format!r} is not one of {', '.join(FORMATS)}")
    _validate_lora(cfg)
    if cfg.packing:
        from harness.training.batching import packing_supported

        if not packing_supported():
            raise UserError("packing=true needs transformers >= 5 (position-id packed attention); "
                            "upgrade transformers or set packing=false")
    return cfg


def _validate_lora(cfg: TrainConfig) -> None:
    default = TrainConfig()
    set_keys = [k for k in ("lora_alpha", "lora_dropout", "lora_target_modules", "lora_merge_on_save")
                if getattr(cfg, k) != getattr(default, k)]
    if cfg.lora_rank is None:
        if set_keys:
            raise UserError(f"{', '.join(set_keys)} only apply to LoRA; set lora_rank (e.g. lora_rank=16) or drop them")
        return
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UserError("lora_rank is set but peft is not installed: pip install 'iwsft-harness[lora]' (or unset lora_rank)") from None
    if cfg.lora_rank < 1:
        raise UserError(f"lora_rank must be >= 1 (got {cfg.lora_rank})")
    if not 0 < cfg.lora_alpha < math.inf:
        raise UserError(f"lora_alpha must be > 0 (got {cfg.lora_alpha})")
    if not 0 <= cfg.lora_dropout < 1:
        raise UserError(f"lora_dropout must be in [0, 1) (got {cfg.lora_dropout})")
    if not cfg.lora_target_modules or not all(isinstance(m, str) and m for m in cfg.lora_target_modules):
        raise UserError(f"lora_target_modules must be a non-empty list of module names (got {cfg.lora_target_modules!r}); "
                        "e.g. [q_proj, v_proj] or [all-linear]")
    for key in ("compile_layers", "fused_lm_head"):
        if getattr(cfg, key):
            raise UserError(f"{key}=true is not supported with LoRA yet (the adapters wrap the layers it rewrites); "
                            f"set {key}=false or unset lora_rank")


# Settings that do not change what a run computes: a run may be resumed (or reused) under new values.
# Not `attention`: like compile_layers, fused_lm_head and fused_head_compile it changes the numbers by rounding only, but a run
# resumed under another kernel would no longer equal the uninterrupted one bit for bit.
RESUMABLE_KEYS = {"output_dir", "lora_merge_on_save", "save_every", "keep_checkpoints", "resumable_checkpoints", "log_every",
                  "tensorboard", "log_with", "tracker_project",
                  "push_to_hub", "push_steps", "hub_private",
                  "peak_tflops", "ref_cache_dir",
                  "model_config", "accelerate_config", "gpu_memory_gib", "cpu_memory_gib"}


WARMUP_STARTS = ("zero", "first-step")


def settings_diff(saved: dict, cfg: TrainConfig) -> list[str]:
    """'key: old -> new' for each setting (RESUMABLE_KEYS aside) where `cfg` differs from a saved run's
    config. A key the saved run does not know was added to the harness since: it ran with the default."""
    new = cfg.to_dict()
    old = {**TrainConfig().to_dict(), **saved}
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if k not in RESUMABLE_KEYS and old.get(k) != new.get(k)]


def _apply(cfg_dict: dict, key: str, value, source: str) -> None:
    if key not in FIELD_NAMES:
        close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(FIELD_NAMES)}"
        raise UserError(f"unknown recipe key {key!r} in {source}{hint}")
    if key == "log_with" and (value is None or isinstance(value, str)):   # log_with=tensorboard,mlflow
        from harness.core.trackers import parse

        value = parse(value)
    cfg_dict[key] = _coerce(key, value)


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        if "=" not in item:
            raise UserError(f"override {item!r} is not key=value (e.g. max_steps=2 output_dir=/tmp/run)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        # Keep path-like and model-like strings as strings even when YAML would parse them oddly.
        if isinstance(value, (int, float)) and key in ("model", "dataset", "output_dir", "ref_cache_dir"):
            value = raw
        out.append((key.strip(), value))
    return out


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML recipe (or start from defaults when path is None) and apply key=value overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            inside = sorted(str(p) for p in path.glob("*.y*ml"))
            raise UserError(f"recipe {path} is a folder; a recipe is a YAML file"
                            + (f", e.g. {', '.join(inside[:3])}" if inside else " (e.g. recipes/tiny/iw-sft.yaml)"))
        if not path.is_file():
            raise UserError(f"recipe {path} does not exist; shipped recipes are under recipes/ (e.g. recipes/tiny/iw-sft.yaml)")
        from harness.core.io import load_yaml_file

        loaded = load_yaml_file(path, "recipe") or {}
        if not isinstance(loaded, dict):
            raise UserError(f"recipe {path} must be a mapping of key: value")
        for k, v in loaded.items():
            _apply(data, str(k), v, str(path))
        # Relative files (data, model config, accelerate config) are looked up beside the recipe first,
        # so recipes run from any directory.
        for key in ("dataset", "model_config", "accelerate_config"):
            f = data.get(key)
            if isinstance(f, str) and not Path(f).is_absolute() and (path.parent / f).is_file():
                data[key] = str((path.parent / f).resolve())
    from_recipe = data.get("dataset")
    for k, v in parse_overrides(list(overrides)):
        _apply(data, k, v, "the command line")
    cfg = validate(TrainConfig(**data))
    if path is not None and from_recipe is not None and cfg.dataset == from_recipe:
        cfg._recipe_dir = path.parent.resolve()     # where a relative dataset path was looked up, for its error
    return cfg


def field_docs() -> dict[str, str]:
    """Field name -> its docstring (the string literal after it in this file), for `iwsft train --help-keys`."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(TrainConfig))
    docs, last = {}, None
    for node in tree.body[0].body:
        if isinstance(node, ast.AnnAssign):
            last = node.target.id
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and last:
            docs[last] = node.value.value
            last = None
    return docs
