import pytest

from tests.conftest import run_script

TINY = ["debug=tiny", "logger=csv"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One short real training shared by the tests that need a checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    result = run_script(
        "train.py", *TINY, "trainer.max_epochs=3", "data.patches_per_epoch=64", root=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((root / "logs" / "train" / "runs").iterdir())
    return root, run_dir, result
