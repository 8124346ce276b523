"""The recommender: an `implicit` model over a dense user x item matrix, the id mappings,
a popularity fallback, and top-K with business filters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from verticals.core.contract import RunContext, Splits
from verticals.core.errors import UserError
from verticals.retail.data import Log

MODELS = ("als", "bpr", "lmf")
#: The score implicit gives a filtered item (bought, excluded): the lowest float32, not
#: -inf, so a k near the catalog's size would bring filtered items back.
FILTERED = float(np.finfo(np.float32).min)


@dataclass
class RetailModel:
    recommender: Any  # an implicit model (CPU after training)
    user_ids: np.ndarray  # dense index -> raw id (str)
    item_ids: np.ndarray
    user_items: Any  # scipy CSR, users x items: what each user already has
    popularity: np.ndarray  # item indices, most popular (distinct users) first
    catalog: pd.DataFrame | None
    params: dict[str, Any]

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {t: i for i, t in enumerate(self.item_ids)}
        self.categories: dict[str, np.ndarray] | None = None  # filled on first use


def single_blas_thread() -> Any:
    """implicit runs its own threads, and warns (and slows down) when BLAS runs more. Its
    BLAS (scipy's OpenBLAS) is loaded with implicit.cpu, so import that before limiting."""
    import implicit.cpu.als  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, "blas")


def matrix(log: pd.DataFrame) -> tuple[Any, np.ndarray, np.ndarray]:
    """(CSR of summed weights, user ids, item ids) from a log with string ids."""
    from scipy.sparse import csr_matrix

    users, user_ids = pd.factorize(log["user"], sort=True)
    items, item_ids = pd.factorize(log["item"], sort=True)
    shape = (len(user_ids), len(item_ids))
    csr = csr_matrix((log["weight"].to_numpy(np.float32), (users, items)), shape=shape)
    csr.sum_duplicates()
    return csr, np.asarray(user_ids, dtype=object), np.asarray(item_ids, dtype=object)


def weighted(csr: Any, params: dict[str, Any]) -> Any:
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    how = params["weighting"]
    if how == "bm25":
        return bm25_weight(csr, K1=params["bm25_k1"], B=params["bm25_b"]).tocsr()
    if how == "tfidf":
        return tfidf_weight(csr).tocsr()
    if how != "none":
        raise UserError(f"model.weighting={how!r} is not one of none, bm25, tfidf")
    return csr


def build(params: dict[str, Any], use_gpu: bool, seed: int) -> Any:
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking
    from implicit.lmf import LogisticMatrixFactorization

    common = {
        "factors": int(params["factors"]),
        "regularization": float(params["regularization"]),
        "iterations": int(params["iterations"]),
        "use_gpu": use_gpu,
        "random_state": seed,
        "num_threads": int(params.get("num_threads", 0)),
    }
    name = params["name"]
    if name == "als":
        return AlternatingLeastSquares(alpha=float(params["alpha"]), **common)
    if name == "bpr":
        return BayesianPersonalizedRanking(learning_rate=float(params["learning_rate"]), **common)
    if name == "lmf":
        return LogisticMatrixFactorization(learning_rate=float(params["learning_rate"]), **common)
    raise UserError(f"model.name={name!r} is not one of {', '.join(MODELS)}")


def fit(cfg: DictConfig, splits: Splits, ctx: RunContext) -> RetailModel:
    """Fit the configured recommender on `splits.train` (a `Log`), on the GPU when usable."""
    import implicit.gpu

    train: Log = splits.train
    # plain words, not enum members: the parameters are saved as JSON with the model
    params = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    assert isinstance(params, dict)
    csr, user_ids, item_ids = matrix(train.frame)
    use_gpu = ctx.device.is_cuda and params["name"] in ("als", "bpr") and implicit.gpu.HAS_CUDA
    if ctx.device.is_cuda and not use_gpu:
        ctx.log.warning(
            "implicit has no CUDA build here (or no GPU %s); training on CPU", params["name"]
        )
    ctx.log.info(
        "%s on %s: %d users x %d items, %d interactions",
        params["name"],
        "GPU" if use_gpu else "CPU",
        *csr.shape,
        csr.nnz,
    )
    with single_blas_thread():
        recommender = build(params, use_gpu, ctx.seed)
        recommender.fit(weighted(csr, params), show_progress=True)
    if use_gpu:
        recommender = recommender.to_cpu()
    distinct = np.asarray((csr > 0).sum(axis=0)).ravel()
    popularity = np.argsort(-distinct, kind="stable")
    return RetailModel(recommender, user_ids, item_ids, csr, popularity, train.catalog, params)


def _allowed(model: RetailModel, category: str | None) -> np.ndarray | None:
    """Item indices of `category` (None: no filter). Computed once per model."""
    if category is None:
        return None
    if model.catalog is None or "category" not in model.catalog.columns:
        raise UserError("category filters need an item catalog with a `category` column")
    if model.categories is None:
        known = model.catalog[model.catalog.index.isin(model.item_index)]
        model.categories = {
            str(name): np.sort([model.item_index[i] for i in group.index]).astype(np.int32)
            for name, group in known.groupby(known["category"].astype(str))
        }
    items = model.categories.get(str(category))
    if items is None or len(items) == 0:
        shown = ", ".join(sorted(model.categories)[:8])
        raise UserError(f"category={category!r} has no items in the catalog; try: {shown}")
    return items


def popular_for(
    model: RetailModel, user: int | None, k: int, exclude: set[int], allowed: np.ndarray | None
) -> np.ndarray:
    """Top-k popular items, minus what the user has and what is excluded."""
    if user is not None:
        exclude = exclude | set(model.user_items[user].indices.tolist())
    pool = (
        model.popularity
        if allowed is None
        else model.popularity[np.isin(model.popularity, allowed)]
    )
    out = [i for i in pool[: k + len(exclude)] if i not in exclude]
    return np.array(out[:k], dtype=np.int64)


def _filters(
    model: RetailModel, exclude_items: list[str] | None, category: str | None
) -> tuple[np.ndarray | None, set[int]]:
    """(allowed item indices or None, excluded item indices) of one request."""
    exclude = {model.item_index[i] for i in (exclude_items or []) if i in model.item_index}
    return _allowed(model, category), exclude


def _popular_fallback(
    model: RetailModel, k: int, exclude: set[int], allowed: np.ndarray | None
) -> list[tuple[str, float]]:
    """For an id the model has never seen: the best sellers, score 0."""
    return [(str(model.item_ids[i]), 0.0) for i in popular_for(model, None, k, exclude, allowed)]


def user_row(model: RetailModel, user: int) -> Any:
    """`model.user_items[user]` (what implicit filters as already bought), built straight
    from the CSR arrays: scipy's row indexing costs ~35 us, a third of a one-user answer,
    this about 15."""
    from scipy.sparse import csr_matrix

    items = model.user_items
    start, end = items.indptr[user], items.indptr[user + 1]
    indptr = np.array([0, end - start], dtype=items.indptr.dtype)
    return csr_matrix(
        (items.data[start:end], items.indices[start:end], indptr),
        shape=(1, items.shape[1]),
        copy=False,
    )


def recommend_one(
    model: RetailModel,
    user_id: str,
    k: int,
    exclude_bought: bool = True,
    exclude_items: list[str] | None = None,
    category: str | None = None,
) -> tuple[list[tuple[str, float]], bool]:
    """([(item id, score)], fallback): an unknown user gets the popularity list, flagged."""
    allowed, exclude = _filters(model, exclude_items, category)
    user = model.user_index.get(str(user_id))
    if user is None:
        return _popular_fallback(model, k, exclude, allowed), True
    filter_items = np.array(sorted(exclude), dtype=np.int32) if exclude else None
    if allowed is not None and filter_items is not None:  # implicit takes one or the other
        allowed, filter_items = np.setdiff1d(allowed, filter_items).astype(np.int32), None
        if len(allowed) == 0:
            return [], False
    ids, scores = model.recommender.recommend(
        user,
        user_row(model, user),
        N=min(k, len(model.item_ids) if allowed is None else len(allowed)),  # more pads with item 0
        filter_already_liked_items=exclude_bought,
        filter_items=filter_items,
        items=allowed,
    )
    keep = np.isfinite(scores) & (scores > FILTERED) & (ids >= 0)
    return [
        (str(model.item_ids[i]), float(s)) for i, s in zip(ids[keep], scores[keep], strict=True)
    ], False


def similar_items(
    model: RetailModel,
    item_id: str,
    k: int,
    exclude_items: list[str] | None = None,
    category: str | None = None,
) -> tuple[list[tuple[str, float]], bool]:
    """([(item id, cosine score)], fallback): items bought by the same kind of customer; an
    unknown item gets the popularity list, flagged."""
    allowed, exclude = _filters(model, exclude_items, category)
    item = model.item_index.get(str(item_id))
    if item is None:
        return _popular_fallback(model, k, exclude, allowed), True
    pool = len(model.item_ids) if allowed is None else len(allowed)
    # a k past the pool's size would pad the answer with item 0 at score 0, over and over
    n = min(k + 1 + len(exclude), pool)
    ids, scores = model.recommender.similar_items(item, N=n, items=allowed)
    out = [
        (str(model.item_ids[i]), float(s))
        for i, s in zip(ids, scores, strict=True)
        if i != item and i not in exclude and np.isfinite(s)
    ]
    return out[:k], False


def recommend_many(model: RetailModel, users: np.ndarray, k: int) -> np.ndarray:
    """Top-k item indices for known user indices, bought items filtered (for evaluation)."""
    ids, _ = model.recommender.recommend(
        users, model.user_items[users], N=k, filter_already_liked_items=True
    )
    return ids


def save(model: RetailModel, directory: Path) -> None:
    from scipy.sparse import save_npz

    directory.mkdir(parents=True, exist_ok=True)
    model.recommender.save(directory / "recommender.npz")
    save_npz(directory / "user_items.npz", model.user_items)
    np.save(directory / "user_ids.npy", model.user_ids.astype(str))
    np.save(directory / "item_ids.npy", model.item_ids.astype(str))
    np.save(directory / "popularity.npy", model.popularity)
    if model.catalog is not None:
        model.catalog.reset_index(names="item").astype({"item": str}).to_parquet(
            directory / "catalog.parquet", index=False
        )
    (directory / "retail.json").write_text(
        json.dumps({"format": 1, "params": model.params}, indent=2) + "\n"
    )


def load(directory: Path) -> RetailModel:
    from scipy.sparse import load_npz

    meta = json.loads((directory / "retail.json").read_text())
    params = meta["params"]
    with single_blas_thread():
        recommender = type(build(params, False, 0)).load(directory / "recommender.npz")
    catalog = None
    if (directory / "catalog.parquet").is_file():
        catalog = pd.read_parquet(directory / "catalog.parquet").set_index("item")
    return RetailModel(
        recommender,
        np.load(directory / "user_ids.npy").astype(object),
        np.load(directory / "item_ids.npy").astype(object),
        load_npz(directory / "user_items.npz").tocsr(),
        np.load(directory / "popularity.npy"),
        catalog,
        params,
    )
