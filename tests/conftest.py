import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def run_script(
    script: str, *args: str, root: Path, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run train.py/infer.py as a user would; outputs land under ``root``."""
    env = dict(
        os.environ,
        PROJECT_ROOT=str(root),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONUNBUFFERED="1",
        HYDRA_FULL_ERROR="0",
    )
    return subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run(tmp_path):
    def _run(script: str, *args: str, timeout: int = 600):
        return run_script(script, *args, root=tmp_path, timeout=timeout)

    return _run
