"""Sub-commands of `iwsft`; see harness/cli.py."""
