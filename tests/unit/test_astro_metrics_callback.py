from types import SimpleNamespace

import numpy as np
import torch

from astrorestore.callbacks.astro_metrics import AstroMetrics
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.simulation.scene import render_field


def _panel(restored_scale: float):
    truth, _ = render_field(64, np.random.default_rng(3), n_stars=12, n_galaxies=0)
    truth = torch.from_numpy(truth)[None, None].repeat(2, 1, 1, 1)
    noisy = truth + 4.0 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    normalizer = AsinhNormalizer()
    offset, scale = normalizer.stats(noisy)
    sky = truth.median()
    restored = sky + restored_scale * (truth - sky)
    z = lambda x: normalizer.forward(x, offset, scale)  # noqa: E731
    panel = {
        "input": z(noisy),
        "restored": z(restored),
        "truth": z(truth),
        "offset": offset,
        "scale": scale,
    }
    return panel, normalizer


def _logged(restored_scale: float) -> dict:
    panel, normalizer = _panel(restored_scale)
    logged = {}
    module = SimpleNamespace(panel=panel, log=lambda k, v: logged.__setitem__(k, float(v)))
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(normalizer=normalizer), sanity_checking=False
    )
    AstroMetrics(fwhm=2.5).on_validation_epoch_end(trainer, module)
    return logged


def test_perfect_restoration_scores_perfectly_and_dimmed_stars_show_a_bias():
    perfect = _logged(1.0)
    assert perfect["val/astro/f1"] > 0.95
    assert abs(perfect["val/astro/flux_bias"]) < 0.01
    assert abs(perfect["val/astro/peak_ratio"] - 1.0) < 0.01
    dimmed = _logged(0.8)
    assert dimmed["val/astro/flux_bias"] < -0.15 and dimmed["val/astro/peak_ratio"] < 0.85


def test_nothing_is_logged_without_truth():
    panel, normalizer = _panel(1.0)
    panel["truth"] = None
    logged = {}
    module = SimpleNamespace(panel=panel, log=lambda k, v: logged.__setitem__(k, v))
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(normalizer=normalizer), sanity_checking=False
    )
    AstroMetrics().on_validation_epoch_end(trainer, module)
    assert logged == {}
