"""The evidence preset's held-out task: >= 400 unordered operand pairs, phrasings split between
training and test, held-out answers never training answers and not piled on a few values."""

from collections import Counter

from harness.evaluation.benchmarks import clusters_for, load_benchmark


def test_sums_split_is_evidence_of_addition_not_recall():
    test, train = load_benchmark("sums"), load_benchmark("sums_train")
    pairs = lambda ps: {tuple(sorted(map(int, p.id.split("-")[1].split("+")))) for p in ps}  # noqa: E731
    assert len(pairs(test)) == len(test) >= 400 and not pairs(test) & pairs(train)
    assert len(pairs(test)) + len(pairs(train)) == 90 * 91 // 2            # every two-digit pair, once
    assert {p.meta["template"] for p in test}.isdisjoint({p.meta["template"] for p in train})
    assert not {p.gold for p in test} & {p.gold for p in train}             # no held-out answer is a training answer
    top = Counter(p.gold for p in test).most_common(1)[0][1]
    assert top / len(test) < 0.05 and len({p.gold for p in test}) >= 40
    assert all(int(p.gold) == sum(map(int, p.id.split("-")[1].split("+"))) for p in test + train)
    assert len(set(clusters_for("sums", [p.id for p in test]).values())) == len(test)   # independent problems
    assert [p.id for p in load_benchmark("sums")] == [p.id for p in test]                # fixed order


def test_curate_accepts_sums_and_still_refuses_test_sets(tmp_path):
    import pytest

    from harness.core.errors import UserError
    from harness.paper.curate import TRAIN_SPLITS, curate

    assert TRAIN_SPLITS["sums"] == "sums_train"
    with pytest.raises(UserError, match="only tasks with a training split"):
        curate("m", "sums_test", 1, tmp_path / "x.jsonl")
