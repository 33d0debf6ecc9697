"""Training panels: colour photographs (normalised to [-1, 1]) are shown with the row's
display range, not clipped to [0, 1]."""

import numpy as np
import torch

from astrorestore.callbacks.image_panels import render_panels


def test_colour_panels_of_a_normalised_photograph_are_not_clipped_to_black():
    rng = np.random.default_rng(0)
    # A dark photograph in the photo normaliser's [-1, 1]: most pixels below 0.
    truth = torch.from_numpy(rng.uniform(-1.0, -0.2, (2, 3, 16, 16)).astype(np.float32))
    grey = truth.mean(1, keepdim=True)
    panel = {"input": grey, "restored": truth + 0.01, "truth": truth}
    figure = render_panels(panel, title="t")
    shown = {ax.get_title(): ax.images[0].get_array() for ax in figure.axes[:4]}
    for name in ("restored", "truth"):
        assert shown[name].ndim == 3
        assert float(np.mean(np.asarray(shown[name]) == 0)) < 0.05, name  # not clipped black
        assert float(np.ptp(np.asarray(shown[name]))) > 0.5  # the range is used


def test_a_chroma_error_shows_in_the_colour_difference_panel():
    # Same luminance, other chroma (what a colorizer gets wrong): the difference panel must
    # show it (a mean over the channels was ~0), and the grey input is drawn in grey.
    rng = np.random.default_rng(1)
    truth = torch.from_numpy(rng.uniform(-0.5, 0.5, (1, 3, 16, 16)).astype(np.float32))
    shift = torch.tensor([0.2, -0.1, -0.1]).view(1, 3, 1, 1)  # zero mean over channels
    panel = {"input": truth.mean(1, keepdim=True), "restored": truth + shift, "truth": truth}
    figure = render_panels(panel)
    axes = {ax.get_title(): ax for ax in figure.axes}
    diff = np.asarray(axes["restored − truth"].images[0].get_array())
    assert diff.ndim == 3 and np.ptp(diff.reshape(-1, 3).mean(0)) > 0.1
    assert axes["input"].images[0].get_cmap().name == "gray"
