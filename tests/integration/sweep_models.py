"""Sweeps name models that colleagues merge separately: skip a sweep until its model exists."""

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO


def skip_if_model_missing(sweep: str) -> None:
    params = OmegaConf.load(REPO / "sweeps" / f"{sweep}.yaml").hydra.sweeper.get("params") or {}
    models = str(params.get("model", "")).split(",") if "model" in params else []
    missing = [
        m for m in models if not (REPO / "configs" / "model" / f"{m.strip()}.yaml").is_file()
    ]
    if missing:
        pytest.skip(f"sweep {sweep} needs model(s) {missing}, not in configs/model/ yet")
