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


# Tests marked ``slow`` (more than ~30 s, or a repeat of a path another default test already
# runs, e.g. DDP for every model) are skipped unless asked for, so that the plain
# ``python -m pytest`` stays within ~15 minutes on a 2-core CPU.
RUN_SLOW_ENV = "ASTRORESTORE_RUN_SLOW"


def pytest_addoption(parser):
    parser.addoption(
        "--runslow",
        action="store_true",
        default=False,
        help=f"also run tests marked slow (or set {RUN_SLOW_ENV}=1)",
    )


def run_slow(config) -> bool:
    return config.getoption("--runslow") or os.environ.get(RUN_SLOW_ENV, "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_slow = pytest.mark.skip(reason="slow: run with `python -m pytest --runslow`")
    cuda, slow = has_cuda(), run_slow(config)
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        elif "slow" in item.keywords and not slow:
            item.add_marker(skip_slow)


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
