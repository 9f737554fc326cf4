"""Adapters that put the harness's objective inside other training libraries (trl.py: TRL's SFTTrainer)."""
