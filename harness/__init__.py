"""iw-SFT reproduction harness: objective, training, offline evaluation and reports."""

__version__ = "0.1.0"
