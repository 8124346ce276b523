"""One applicant's SHAP contributions through LightGBM's single-row C API.

`Booster.predict` spends ~30 of its ~70 us per one-row call in Python (argument checks, a
predictor object, array conversion); `LGBM_BoosterPredictForMatSingleRowFast` is the C
API's answer to exactly this (a prediction setup made once, reused per row) and gives the
same numbers bit for bit. Anything unexpected (another LightGBM build, a GPU booster) and
callers fall back to `Booster.predict`.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import Any

import lightgbm as lgb
import numpy as np

# From LightGBM's c_api.h (stable since 3.0).
C_API_PREDICT_CONTRIB = 3
C_API_DTYPE_FLOAT64 = 1

_setups: weakref.WeakKeyDictionary[lgb.Booster, tuple[int, Any]] = weakref.WeakKeyDictionary()


def _lib() -> Any:
    return lgb.basic._LIB  # the loaded lib_lightgbm; LightGBM's own wrappers use it


def _setup(booster: lgb.Booster, num_iteration: int, n_features: int) -> Any:
    """The C API's prediction setup for `booster`, made once and freed with the booster."""
    known = _setups.get(booster)
    if known is not None and known[0] == num_iteration:
        return known[1]
    handle = ctypes.c_void_p()
    status = _lib().LGBM_BoosterPredictForMatSingleRowFastInit(
        booster._handle,
        ctypes.c_int(C_API_PREDICT_CONTRIB),
        ctypes.c_int(0),  # start iteration
        ctypes.c_int(num_iteration),
        ctypes.c_int(C_API_DTYPE_FLOAT64),
        ctypes.c_int32(n_features),
        ctypes.c_char_p(b"num_threads=1"),
        ctypes.byref(handle),
    )
    if status != 0:
        raise RuntimeError(_lib().LGBM_GetLastError().decode())
    weakref.finalize(booster, _lib().LGBM_FastConfigFree, handle)
    _setups[booster] = (num_iteration, handle)
    return handle


def contributions(booster: lgb.Booster, row: np.ndarray, num_iteration: int) -> np.ndarray:
    """SHAP contributions (features + bias) of one row, as `Booster.predict(pred_contrib)`."""
    row = np.ascontiguousarray(row, dtype=np.float64)
    handle = _setup(booster, num_iteration, row.shape[-1])
    out = np.empty(row.shape[-1] + 1, dtype=np.float64)
    written = ctypes.c_int64()
    status = _lib().LGBM_BoosterPredictForMatSingleRowFast(
        handle,
        row.ctypes.data_as(ctypes.c_void_p),
        ctypes.byref(written),
        out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
    )
    if status != 0 or written.value != len(out):
        raise RuntimeError(_lib().LGBM_GetLastError().decode())
    return out[None, :]
