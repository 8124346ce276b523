"""The suite's metrics against the libraries' own implementations on the same inputs.

Retail: MAP@k and NDCG@k from `verticals.retail.metrics.at_k` (through the vertical's
evaluate) against `implicit.evaluation.ranking_metrics_at_k`, same model and split. implicit
(0.7, evaluation.pyx) normalises both as the suite does: a user's average precision is
divided by min(k, |held out|), and the ideal DCG counts min(k, |held out|) hits. Precision
differs by definition: implicit's is pooled, all hits / sum of min(k, |held out|), the
suite's the mean of hits / k per user; the test asserts that relation (the same hits).

Medical: Dice per label (`verticals.medical.metrics.dice_per_label`) against MONAI's
`DiceMetric` on one-hot masks. Where the truth has the label they agree. Where it does not,
the suite says NaN if the prediction lacks it too (nothing to find) and 0 if the prediction
invents it; MONAI's `ignore_empty=True` says NaN in both cases, `ignore_empty=False` says
1 and 0.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from verticals.configs import compose


@pytest.fixture(scope="module")
def retail_small(tmp_path_factory: pytest.TempPathFactory):
    """Two small trained recommenders (ALS, BPR) with the split they were trained on."""
    pytest.importorskip("implicit")
    from verticals.core.contract import RunContext
    from verticals.core.device import resolve_device
    from verticals.retail.data import load_splits
    from verticals.retail.model import fit

    root = tmp_path_factory.mktemp("retail_oracle")
    small = ["data.n_users=500", "data.n_items=300", "data.n_interactions=15000"]
    out = {}
    for name, extra in (("als", ["model.factors=16"]), ("bpr", ["model.k=5"])):
        cfg = compose(
            "train",
            "retail",
            [f"paths.root_dir={root}", "trainer.device=cpu", f"model={name}", *small, *extra],
        )
        splits = load_splits(cfg)
        ctx = RunContext(root, resolve_device("cpu"), int(cfg.seed), logging.getLogger("oracle"))
        out[name] = (fit(cfg, splits, ctx), splits.test)
    return out


def _held_out_matrix(model, truth):
    """The held-out items as implicit takes them: a users x items CSR, the model's indices."""
    from scipy.sparse import csr_matrix

    rows, cols = [], []
    for user, items in zip(truth.users, truth.items, strict=True):
        for item in items:
            if user in model.user_index and item in model.item_index:
                rows.append(model.user_index[user])
                cols.append(model.item_index[item])
    shape = (len(model.user_ids), len(model.item_ids))
    return csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)


@pytest.mark.parametrize("name", ["als", "bpr"])
def test_retail_map_and_ndcg_match_implicit(retail_small, name: str) -> None:
    from implicit.evaluation import ranking_metrics_at_k

    from verticals.retail.evaluation import evaluate
    from verticals.retail.model import single_blas_thread

    model, truth = retail_small[name]
    k = int(model.params["k"])
    ours = evaluate(model, truth)
    held_out = _held_out_matrix(model, truth)
    with single_blas_thread():
        theirs = ranking_metrics_at_k(
            model.recommender, model.user_items, held_out, K=k, show_progress=False
        )
    assert ours["test_users"] == np.diff(held_out.indptr).astype(bool).sum() > 100
    assert ours[f"ndcg@{k}"] > 0.01  # a model that finds something, so the match means much
    assert ours[f"map@{k}"] == pytest.approx(theirs["map"], rel=1e-9, abs=1e-12)
    assert ours[f"ndcg@{k}"] == pytest.approx(theirs["ndcg"], rel=1e-9, abs=1e-12)
    # precision: the same hits, normalised per user (suite) or pooled (implicit)
    sizes = np.minimum(np.diff(held_out.indptr), k)
    hits_ours = ours[f"precision@{k}"] * k * ours["test_users"]
    hits_theirs = theirs["precision"] * sizes.sum()
    assert hits_ours == pytest.approx(hits_theirs, rel=1e-9)
    assert round(hits_ours) == pytest.approx(hits_ours, abs=1e-6)  # a whole number of hits


def _masks(seed: int, shape: tuple[int, int, int] = (24, 20, 16)) -> tuple[np.ndarray, ...]:
    """A label map with two blobs, and a prediction that shifts, erodes and adds noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    truth = np.zeros(shape, dtype=np.int64)
    for label, centre, radius in ((1, (8, 8, 6), 5), (2, (16, 12, 10), 4)):
        c = np.array(centre) + rng.integers(-2, 3, size=3)
        truth[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= radius**2] = label
    pred = np.roll(truth, shift=int(rng.integers(1, 3)), axis=int(rng.integers(0, 3)))
    noise = rng.random(shape)
    pred[noise < 0.02] = 0
    pred[noise > 0.995] = rng.integers(1, 3, size=int((noise > 0.995).sum()))
    return pred, truth


def _monai_dice(pred: np.ndarray, truth: np.ndarray, n_labels: int, ignore_empty: bool):
    import torch
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=ignore_empty)
    as_onehot = lambda a: one_hot(torch.from_numpy(a)[None, None], num_classes=n_labels)  # noqa: E731
    return metric(as_onehot(pred), as_onehot(truth))[0].numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_medical_dice_matches_monai(seed: int) -> None:
    pytest.importorskip("monai")
    from verticals.medical.metrics import dice_per_label

    labels = {1: "anterior", 2: "posterior"}
    pred, truth = _masks(seed)
    assert all((truth == k).any() for k in labels)  # non-empty truth for every label
    ours = dice_per_label(pred, truth, labels)
    monai = _monai_dice(pred, truth, 3, ignore_empty=True)
    assert [ours[n] for n in labels.values()] == pytest.approx(monai.tolist(), rel=1e-6)
    assert 0.3 < min(ours.values()) < 0.99  # imperfect, so the comparison has teeth


def test_medical_dice_on_absent_labels_follows_the_documented_rule() -> None:
    pytest.importorskip("monai")
    from verticals.medical.metrics import dice_per_label

    labels = {1: "present", 2: "invented", 3: "absent"}
    pred, truth = _masks(5)
    truth[truth == 2] = 0  # label 2: only the prediction has it
    pred[pred == 3] = 0
    ours = dice_per_label(pred, truth, labels)
    strict = _monai_dice(pred, truth, 4, ignore_empty=False)
    lenient = _monai_dice(pred, truth, 4, ignore_empty=True)
    assert ours["present"] == pytest.approx(strict[0]) == pytest.approx(lenient[0])
    assert ours["invented"] == 0.0 == strict[1] and np.isnan(lenient[1])
    assert np.isnan(ours["absent"]) and strict[2] == 1.0 and np.isnan(lenient[2])
