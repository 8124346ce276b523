"""The segmentation networks selectable by `model=`: MONAI's UNet, SegResNet and SwinUNETR."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from verticals.core.errors import UserError

NETWORKS = ("unet", "segresnet", "swinunetr")


def divisor(net: dict[str, Any]) -> int:
    """Patch sides must be multiples of this for the network's down/up-sampling to line up."""
    if net["name"] == "unet":
        return math.prod(int(s) for s in net["strides"])
    if net["name"] == "segresnet":
        return 8  # three stride-2 stages
    return 32  # swinunetr: patch embedding + four merges


def min_side(net: dict[str, Any]) -> int:
    """The smallest patch side that leaves the bottleneck more than one voxel wide (instance
    norm cannot train on a single voxel)."""
    return 64 if net["name"] == "swinunetr" else 2 * divisor(net)


def build(net: dict[str, Any], in_channels: int, out_channels: int) -> Any:
    """A fresh network from the model config (a plain dict, as saved with the model)."""
    from monai.networks.nets import SegResNet, SwinUNETR, UNet

    name = net["name"]
    if name == "unet":
        channels, strides = list(net["channels"]), list(net["strides"])
        if len(strides) != len(channels) - 1:
            raise UserError(
                f"model.strides has {len(strides)} entries; model.channels has {len(channels)}: "
                "give one stride per down-sampling step (len(channels) - 1)"
            )
        return UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            strides=strides,
            num_res_units=int(net["num_res_units"]),
            norm=net["norm"],
            dropout=float(net["dropout"]),
        )
    if name == "segresnet":
        return SegResNet(
            spatial_dims=3,
            init_filters=int(net["init_filters"]),
            in_channels=in_channels,
            out_channels=out_channels,
            dropout_prob=float(net["dropout"]) or None,
        )
    if name == "swinunetr":
        if int(net["feature_size"]) % 12:
            raise UserError(f"model.feature_size={net['feature_size']} must be a multiple of 12")
        return SwinUNETR(
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=int(net["feature_size"]),
            norm_name=net["norm"],
            drop_rate=float(net["dropout"]),
        )
    raise UserError(f"model.name={name!r} is not one of {', '.join(NETWORKS)}")


def load_weights(network: Any, path: str | Path) -> tuple[int, int]:
    """Start from a local state dict (a plain one, or a checkpoint holding `state_dict` /
    `model`). Tensors whose name and shape match are loaded; returns (loaded, total)."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"model.weights={path} does not exist (weights are never downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"model.weights={path} is not a torch state dict: {exc}") from None
    for key in ("state_dict", "model", "network"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = network.state_dict()
    matched = {
        k.removeprefix("module."): v
        for k, v in state.items()
        if k.removeprefix("module.") in own and own[k.removeprefix("module.")].shape == v.shape
    }
    if not matched:
        raise UserError(
            f"model.weights={path}: no tensor matches this {type(network).__name__} "
            "(check model= and its channels)"
        )
    network.load_state_dict(matched, strict=False)
    return len(matched), len(own)
