"""iw-SFT with TRL: the embedded SmolLM2-135M-Instruct on the shipped tiny curated set, a few steps on CPU.

    pip install 'iwsft-harness[trl]'
    python examples/trl_iwsft.py --max-steps 4                # the harness's tokenisation (as `iwsft train`)
    python examples/trl_iwsft.py --max-steps 4 --format trl   # TRL tokenises a prompt/completion dataset itself
    python examples/trl_iwsft.py --max-steps 2 --examples 16  # the first 16 rows only (a quick check)

`--format harness` feeds TRL the examples `iwsft train recipes/tiny/iw-sft.yaml` trains on (chat template,
think prefix on the prompt side, no loss on the spans the sampler forced). `--format trl` gives TRL plain
prompt/completion text and lets it build the labels (loss on the whole completion, EOS appended).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny" / "iw-sft.yaml"


def harness_dataset(cfg, tokenizer, examples=None):
    import datasets

    from harness.training.data import load_rows, prepare

    data = prepare(load_rows(cfg.dataset)[:examples], tokenizer, cfg)
    return datasets.Dataset.from_list([{"input_ids": e.input_ids,
                                        "labels": [t if m else -100 for t, m in zip(e.input_ids, e.loss_mask)]}
                                       for e in data.examples])


def trl_dataset(cfg, tokenizer, examples=None):
    import datasets

    from harness.training.data import load_rows

    def prompt(q):
        text = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        return text + cfg.think_prefix
    return datasets.Dataset.from_list([{"prompt": prompt(r[cfg.question_column]), "completion": r[cfg.completion_column]}
                                       for r in load_rows(cfg.dataset)[:examples]])


def first_step_warmup(trainer_cls):
    """The trainer with the recipe key warmup_start=first-step: transformers' schedule runs the first
    optimizer step at learning rate 0, so a 2-step demo would log w_mean 1.0000 throughout."""
    from harness.training.optim import cosine_schedule

    class Trainer(trainer_cls):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = cosine_schedule(optimizer or self.optimizer,
                                                    self.args.get_warmup_steps(num_training_steps),
                                                    num_training_steps, "first-step")
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return Trainer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--weighting", default="iw-sft", help="sft, iw-sft, iw-sft-paper, per-step")
    p.add_argument("--q-source", default="lag0", help="lag0, periodic, ema")
    p.add_argument("--format", choices=("harness", "trl"), default="harness")
    p.add_argument("--examples", type=int, default=None,
                   help="train on the first N rows of the curated set (default: all); the reference log-probs, "
                        "one forward over the first epoch, then cover only those")
    p.add_argument("--output-dir", default="runs/trl-iwsft")
    p.add_argument("--ref-cache-dir", default=None)
    a = p.parse_args(argv)
    if a.examples is not None and a.examples < 1:
        p.error(f"--examples must be >= 1, got {a.examples}")

    from harness.core.models import load_model, load_tokenizer
    from harness.integrations.trl import IWSFTConfig, IWSFTTrainer
    from harness.training.config import load_recipe

    cfg = load_recipe(RECIPE, [])     # the tiny recipe's data and optimiser settings
    tok = load_tokenizer(cfg.model)   # `smollm2-135m`: resolved offline from the embedded GGUF
    model = load_model(cfg.model, dtype="float32", device=None)
    ds = harness_dataset(cfg, tok, a.examples) if a.format == "harness" else trl_dataset(cfg, tok, a.examples)
    args = IWSFTConfig(
        output_dir=a.output_dir, weighting=a.weighting, q_source=a.q_source, ref_cache_dir=a.ref_cache_dir,
        max_steps=a.max_steps, per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.global_batch_size // cfg.micro_batch_size,
        learning_rate=cfg.learning_rate, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio, lr_scheduler_type="cosine",
        max_grad_norm=cfg.max_grad_norm, max_length=cfg.block_size, seed=cfg.seed,
        bf16=False, gradient_checkpointing=False,     # CPU, float32, short sequences
        logging_steps=1, save_strategy="no", report_to="none", dataloader_pin_memory=False,   # no GPU to pin for
    )
    trainer = first_step_warmup(IWSFTTrainer)(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    for row in trainer.weight_history:
        print(f"step {row['step']}: w_mean {row['w_mean']:.4f}  w_max {row['w_max']:.4f}  ess_frac {row['ess_frac']:.3f}")
    final = Path(a.output_dir) / "final"
    trainer.save_model(str(final))
    print(f"saved {final}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
