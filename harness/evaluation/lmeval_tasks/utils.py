"""Functions the iwsft_*.yaml task files name with `!function utils.NAME` (lm-eval loads this file by
path). Everything lives in harness.evaluation.lmeval_tasks, imported normally, so state is shared."""

from harness.evaluation.lmeval_tasks import doc_to_text, extracted_rate, load_docs, process_results  # noqa: F401


def load_aime24(**metadata):
    return load_docs("aime24", **metadata)


def load_math500(**metadata):
    return load_docs("math500", **metadata)


def load_gpqa_diamond(**metadata):
    return load_docs("gpqa_diamond", **metadata)


def load_arith(**metadata):
    return load_docs("arith", **metadata)
