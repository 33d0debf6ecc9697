"""Blind-spot pairing: where pixels are hidden, what replaces them, and what it refuses."""

import pytest
import torch

from astrorestore.data.augment import Augment
from astrorestore.data.corruption.noise import GaussianNoise
from astrorestore.data.datamodules.simulated import SimulatedFieldDataModule
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.pairings.blind_spot import (
    BlindSpotPairing,
    check_n2v2_bundle,
    mask_frames,
    stratified_coordinates,
)
from astrorestore.errors import UserError
from astrorestore.nets.n2v_unet import N2VUNet


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _ramp(b=2, h=32, w=32):
    """Every pixel holds its own flat index: a value names the pixel it came from."""
    return torch.arange(b * h * w, dtype=torch.float32).reshape(b, 1, h, w)


def _source(value, h=32, w=32):
    """(image, y, x) of a ramp value."""
    value = int(value)
    return value // (h * w), (value % (h * w)) // w, value % w


def test_stratified_positions_cover_the_grid_one_per_cell():
    image, y, x = stratified_coordinates(3, 100, 90, 0.01, _gen())
    assert y.min() >= 0 and y.max() < 100 and x.min() >= 0 and x.max() < 90
    cells = {(int(i), int(r) // 10, int(c) // 10) for i, r, c in zip(image, y, x, strict=True)}
    assert len(cells) == len(y) == 3 * 10 * 9  # exactly one position per 10x10 cell


def test_a_patch_smaller_than_a_cell_still_gets_one_position():
    _, mask = mask_frames(torch.rand(4, 1, 8, 8), masked_fraction=0.002, rng=_gen())
    assert mask.flatten(1).sum(1).tolist() == [1, 1, 1, 1]


def test_masked_fraction_is_what_was_asked():
    _, mask = mask_frames(torch.rand(2, 1, 256, 256), masked_fraction=0.01, rng=_gen())
    assert mask.float().mean().item() == pytest.approx(0.01, rel=0.05)


def test_loss_mask_comes_from_coordinates_even_where_values_tie():
    # A saturated (constant) frame: every replacement equals the original value.
    saturated = torch.full((2, 1, 64, 64), 65535.0)
    masked, mask = mask_frames(saturated, masked_fraction=0.01, rng=_gen())
    assert torch.equal(masked, saturated)
    assert mask.sum().item() == 2 * 7 * 7  # 10-px cells: seven per side of 64 px


def test_uniform_replacement_is_a_visible_neighbour_never_the_pixel_itself():
    frames = _ramp()
    masked, mask = mask_frames(frames, masked_fraction=0.05, window=5, rng=_gen())
    changed = masked != frames
    assert torch.equal(changed, mask)  # ramp values are unique: only hidden pixels change
    for b, _, yy, xx in mask.nonzero().tolist():
        src_b, src_y, src_x = _source(masked[b, 0, yy, xx])
        assert src_b == b and (src_y, src_x) != (yy, xx)
        assert abs(src_y - yy) <= 2 and abs(src_x - xx) <= 2
        assert not mask[src_b, 0, src_y, src_x]  # never another hidden pixel's value


def test_median_replacement_is_the_median_of_the_visible_window():
    torch.manual_seed(0)
    frames = torch.rand(1, 1, 32, 32) * 100
    masked, mask = mask_frames(
        frames, masked_fraction=0.01, strategy="median", window=3, rng=_gen()
    )
    for _, _, yy, xx in mask.nonzero().tolist():
        if 0 < yy < 31 and 0 < xx < 31:
            window = frames[0, 0, yy - 1 : yy + 2, xx - 1 : xx + 2].flatten()
            hidden = mask[0, 0, yy - 1 : yy + 2, xx - 1 : xx + 2].flatten()
            # Other hidden pixels (adjacent cells can draw adjacent positions) are not used.
            assert masked[0, 0, yy, xx] == torch.median(window[~hidden])


def test_structn2v_hides_a_line_and_fills_it_from_other_rows():
    frames = _ramp()
    masked, mask = mask_frames(
        frames,
        masked_fraction=0.01,
        struct_axis="row",
        struct_span=5,
        window=5,
        rng=_gen(),
    )
    for b, _, yy, xx in mask.nonzero().tolist():
        for dx in range(-2, 3):
            if 0 <= xx + dx < 32:
                src_b, src_y, _ = _source(masked[b, 0, yy, xx + dx])
                # The whole line is replaced, by values from rows the stripe does not cover.
                assert src_b == b and src_y != yy
    # The loss is still only at the drawn positions, one per cell.
    assert mask.sum().item() == 2 * 4 * 4


def test_square_hole_is_hidden_and_filled_from_outside_it():
    # 8x8 patches at 0.2 %: one position per patch, so holes cannot overlap.
    frames = _ramp(b=16, h=8, w=8)
    masked, mask = mask_frames(
        frames, masked_fraction=0.002, strategy="square_hole", hole_size=3, window=5
    )
    assert mask.sum().item() == 16
    for b, _, yy, xx in mask.nonzero().tolist():
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if 0 <= yy + dy < 8 and 0 <= xx + dx < 8:
                    src_b, src_y, src_x = _source(masked[b, 0, yy + dy, xx + dx], 8, 8)
                    # From the ring just outside the hole, inside the window.
                    assert src_b == b and max(abs(src_y - yy), abs(src_x - xx)) == 2


def test_masks_follow_the_generator():
    frames = torch.rand(2, 1, 64, 64)
    first = mask_frames(frames, 0.01, rng=_gen(1))
    again = mask_frames(frames, 0.01, rng=_gen(1))
    other = mask_frames(frames, 0.01, rng=_gen(2))
    assert torch.equal(first[1], again[1]) and torch.equal(first[0], again[0])
    assert not torch.equal(first[1], other[1])


def test_pairing_from_clean_fields_keeps_the_truth_and_the_unmasked_frame():
    clean = torch.full((2, 1, 32, 32), 100.0)
    out = BlindSpotPairing(GaussianNoise(sigma=5.0), masked_fraction=0.01)({"clean": clean}, _gen())
    assert set(out) == {"input", "target", "loss_mask", "observed", "truth"}
    assert torch.equal(out["truth"], clean)
    assert torch.equal(out["target"], out["observed"])
    assert 4.0 < (out["observed"] - clean).std().item() < 6.0
    differs = out["input"] != out["observed"]
    assert not (differs & ~out["loss_mask"]).any()  # only hidden pixels were touched


def test_pairing_uses_real_frames_as_they_are_and_honours_bad_pixels():
    noisy = torch.rand(2, 1, 32, 32)
    valid = torch.ones(2, 1, 32, 32, dtype=torch.bool)
    valid[:, :, :16] = False
    out = BlindSpotPairing(masked_fraction=0.05)({"noisy": noisy, "valid": valid}, _gen())
    assert "truth" not in out and torch.equal(out["observed"], noisy)
    assert out["loss_mask"].any() and not (out["loss_mask"] & ~valid).any()


def test_nan_pixels_are_never_used_as_replacements():
    noisy = torch.rand(1, 1, 32, 32)
    noisy[0, 0, ::2] = float("nan")  # every other row unusable
    masked, mask = mask_frames(noisy, 0.05, rng=_gen())
    odd_rows = mask[0, 0, 1::2]
    assert torch.isfinite(masked[0, 0, 1::2][odd_rows]).all()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"masked_fraction": 0.0}, "masked_fraction"),
        ({"masked_fraction": 0.5}, "masked_fraction"),
        ({"strategy": "mean"}, "strategy"),
        ({"window": 4}, "window"),
        ({"strategy": "square_hole", "hole_size": 5, "window": 5}, "window"),
        ({"struct_axis": "diagonal"}, "struct_axis"),
        ({"struct_span": 0}, "struct_span"),
    ],
)
def test_bad_settings_fail_in_one_line_naming_the_key(kwargs, key):
    with pytest.raises(UserError) as info:
        BlindSpotPairing(**kwargs)
    assert f"data.pairing.{key}" in str(info.value) and "\n" not in str(info.value)


def test_clean_data_without_a_noise_model_is_refused_at_set_up():
    with pytest.raises(UserError, match="noise="):
        BlindSpotPairing().check_data(1, frozenset({"clean"}), "simulated")
    BlindSpotPairing().check_data(1, frozenset({"noisy"}), "jwst")  # real frames: fine


@pytest.mark.parametrize(
    ("strategy", "blur_pool", "top_skip", "ok"),
    [
        ("uniform", False, True, True),  # Noise2Void
        ("median", True, False, True),  # N2V2
        ("median", False, True, False),
        ("uniform", True, False, False),
        ("median", True, True, False),
        ("uniform", False, False, False),
    ],
)
def test_n2v2_is_all_or_nothing(strategy, blur_pool, top_skip, ok):
    net = N2VUNet(base_channels=4, depth=1, blur_pool=blur_pool, top_skip=top_skip)
    pairing = BlindSpotPairing(strategy=strategy)
    if ok:
        pairing.check_net(net)
        check_n2v2_bundle(strategy, blur_pool, top_skip)
    else:
        with pytest.raises(UserError) as info:
            pairing.check_net(net)
        assert "model=n2v2" in str(info.value) and "\n" not in str(info.value)


def test_structn2v_refuses_rotating_augmentations():
    pairing = BlindSpotPairing(GaussianNoise(sigma=1.0), struct_axis="row")

    def build(augment):
        return SimulatedFieldDataModule(pairing, AsinhNormalizer(), augment=augment)

    with pytest.raises(UserError, match="rot90"):
        build(Augment(flips=True, rot90=True))
    assert build(Augment(flips=True, rot90=False)).pairing.structured_axis == "row"


def test_exposure_pairs_are_refused_for_blind_spot_training() -> None:
    # model=n2v data.pairs=true read a pair per crop, used one exposure and silently dropped
    # the other (without data.pairs both exposures are frames of their own).
    with pytest.raises(UserError, match=r"drop data.pairs=true, or use model=n2n"):
        BlindSpotPairing().check_data(1, frozenset({"noisy", "noisy2", "valid"}), "jwst")
