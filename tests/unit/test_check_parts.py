"""train.py's start-up cross-checks of data.patch_size against the network and pairing."""

from types import SimpleNamespace

import pytest

from astrorestore.data.pairings.blind_spot import BlindSpotPairing
from astrorestore.data.pairings.colorization import ColorizationPairing
from astrorestore.data.pairings.super_resolution import SuperResolutionPairing
from astrorestore.errors import UserError
from astrorestore.nets.sr3_unet import SR3UNet
from astrorestore.nets.upsampling import UpsamplingResidualUNet
from astrorestore.train import check_parts


def _data(patch, pairing):
    return SimpleNamespace(patch_size=patch, pairing=pairing, provides=frozenset({"clean"}))


@pytest.mark.parametrize(
    "net",
    [
        SR3UNet(channels=3, base_channels=8, depth=3, scale=2),
        UpsamplingResidualUNet(channels=3, base_channels=8, depth=3, scale=2),
    ],
)
def test_a_super_resolvers_patch_size_is_checked_on_the_high_resolution_grid(net):
    # depth 3 at x2: the low-resolution input must be a multiple of 4, so the patch (the
    # high-resolution size) of 8. 36 passed the check and crashed in the first forward pass
    # ("Sizes of tensors must match").
    pairing = SuperResolutionPairing(scale=2)
    with pytest.raises(UserError, match=r"data.patch_size=36 must be a positive multiple of 8"):
        check_parts(_data(36, pairing), {"net": net})
    check_parts(_data(32, pairing), {"net": net})


def test_a_same_size_model_keeps_its_own_multiple():
    from astrorestore.nets.unet_generator import ColorizationGenerator

    net = ColorizationGenerator(base_channels=8, depth=3)
    check_parts(_data(40, ColorizationPairing()), {"net": net})
    with pytest.raises(UserError, match="multiple of 8"):
        check_parts(_data(36, ColorizationPairing()), {"net": net})


def test_a_struct_line_as_long_as_the_crop_is_refused():
    # structN2V hid whole rows of the 32 px crops without a word at struct_span=41.
    pairing = BlindSpotPairing(struct_axis="row", struct_span=41)
    with pytest.raises(UserError, match=r"struct_span=41 hides the whole row of a 32 px crop"):
        check_parts(_data(32, pairing), {})
    check_parts(_data(64, pairing), {})
    check_parts(_data(32, BlindSpotPairing(struct_span=41)), {})  # no struct axis: unused


def test_a_setting_the_constructor_does_not_take_is_one_line():
    # e.g. debug=tiny's data.field_size with data=hubble: Hydra's TypeError, wrapped twice
    from omegaconf import OmegaConf

    from astrorestore.train import _instantiate

    node = OmegaConf.create({"_target_": "astrorestore.nets.res_unet.ResidualUNet", "bogus": 1})
    with pytest.raises(UserError, match=r"^model.net.bogus is not a setting of ResidualUNet: drop"):
        _instantiate(node, "model.net")
