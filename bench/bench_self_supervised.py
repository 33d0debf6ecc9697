"""Benchmark the self-supervised denoisers against supervised training and classical filters.

Every learned method gets the same training data, the same number of optimisation steps and the
same batch (``--steps``, ``--batch``), and is scored on the same held-out fields; classical rows
need no training. Training replicates ``RegressionModule.training_step`` (pairing on the batch,
asinh normalisation, net, masked loss, AdamW) without Lightning, so the time measured is the
method's own.

- Training data: ``SimulatedFieldDataModule`` with randomised scenes (PSF FWHM 1.2-5 px, several
  families, sky 5-200 e-, crowding) so no method is taught one PSF; Poisson-Gaussian noise (gain
  1, read noise 5 e-, exposure 0.5-2) drawn per batch. N2V/N2V2 see only the noisy draw, N2N two
  independent draws, supervised the clean truth.
- Held-out fields: 512x512 renders at seeds 9000+ (never used in training), Moffat PSF with
  FWHM 1.6, 2.5 and 3.5 px, sky 20 e-, Poisson + 5 e- read noise at exposure 1.
- Measures, per field, in electrons:
  - PSNR, data range = max - min of the clean field (stated in the table), and PSNR in the
    asinh-normalised space (what the networks see; the N2N-vs-supervised gate uses it);
  - empty-sky noise: std(restored - truth) / std(noisy - truth) where the truth is within
    0.5 e- of the sky;
  - median aperture-flux bias of catalogued stars with S/N > 20 in the truth (r = 2 FWHM,
    sky known): median of (restored - true) / true;
  - bright-star peak ratio: median of (restored - sky) / (truth - sky) at the true peak pixel,
    for stars whose true peak is > 50 sigma above the sky.
- Throughput: training patches per second over the timed steps (this machine).

- Peers: with ``--careamics-python PATH`` (a Python that has the optional CAREamics
  installed), CAREamics' own N2V, N2V2 and N2N with its defaults, trained for the same steps
  and batch on the same training fields (one fixed pair of noise draws, as it takes arrays),
  scored by the same code (``bench/careamics_rows.py``).

Writes ``bench/results/self_supervised.md`` (and ``.json``).
Usage: ``python bench/bench_self_supervised.py [--steps 200] [--batch 8] [--methods n2v,n2v2,...]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.datamodules.simulated import SimulatedFieldDataModule
from astrorestore.data.normalization.asinh import AsinhNoise, AsinhNormalizer
from astrorestore.data.pairings.base import Noise2NoisePairing, SupervisedPairing
from astrorestore.data.pairings.blind_spot import BlindSpotPairing
from astrorestore.data.simulation.scene import render_field
from astrorestore.losses.pixel import RestorationLoss
from astrorestore.metrics.image_quality import psnr
from astrorestore.nets.bounded import BoundedResidualUNet
from astrorestore.nets.n2v_unet import N2VUNet
from astrorestore.nets.res_unet import ResidualUNet
from astrorestore.nets.res_unet_se import ResUNetSE
from astrorestore.postprocess.give_back import GiveBack

RESULTS = Path(__file__).resolve().parent / "results"
FWHMS = (1.6, 2.5, 3.5)
READ_NOISE = 5.0
SKY = 20.0
TRAIN_SCENE = {
    "sky": [5.0, 200.0],
    "n_stars": [20, 200],
    "psf": {"moffat": 0.6, "gaussian": 0.15, "airy": 0.25},
    "psf_fwhm": [1.2, 5.0],
    "psf_beta": [2.0, 5.0],
}


def _noise() -> PoissonGaussianNoise:
    return PoissonGaussianNoise(gain=1.0, read_noise=READ_NOISE, exposure_range=(0.5, 2.0))


def learned_methods() -> dict[str, dict]:
    """Pairing, network and loss of each learned row (the shipped configs' defaults)."""
    l2 = dict(l1_weight=0.0, l2_weight=1.0, ssim_weight=0.0, gradient_weight=0.0)

    def n2v(output="image", fraction=0.002, n2v2=False, bound=None, flux=None, lr=4e-4) -> dict:
        strategy = "median" if n2v2 else "uniform"
        return dict(
            pairing=lambda: BlindSpotPairing(_noise(), masked_fraction=fraction, strategy=strategy),
            net=lambda: N2VUNet(
                base_channels=32,
                depth=2,
                blur_pool=n2v2,
                top_skip=not n2v2,
                output=output,
                bound_sigmas=bound,
                noise=AsinhNoise(),
            ),
            loss=lambda: RestorationLoss(**l2),
            lr=lr,
            # postprocess=give_back after the network (None: none)
            give_back=None if flux is None else GiveBack(detect_scale=flux),
        )

    def n2n(bound=None, photons_per_unit=None, supervised=False) -> dict:
        pairing = SupervisedPairing if supervised else Noise2NoisePairing
        return dict(
            pairing=lambda: pairing(_noise()),
            net=lambda: ResUNetSE(
                base_channels=16,
                depth=3,
                bound_sigmas=bound,
                noise=AsinhNoise(3.0, photons_per_unit),
            ),
            loss=lambda: RestorationLoss(**l2),
            lr=2e-3,
        )

    return {
        # model=supervised: the bounded residual U-Net (k = 4 sky sigmas, the normaliser's
        # default softening 3), L1 + SSIM + gradient; and the previous, unbounded default.
        "supervised": dict(
            pairing=lambda: SupervisedPairing(_noise()),
            net=lambda: BoundedResidualUNet(
                base_channels=16, depth=3, bound_sigmas=4.0, noise=AsinhNoise()
            ),
            loss=lambda: RestorationLoss(),
            lr=2e-3,
        ),
        "supervised_unbounded": dict(
            pairing=lambda: SupervisedPairing(_noise()),
            net=lambda: ResidualUNet(base_channels=16, depth=3),
            loss=lambda: RestorationLoss(),
            lr=2e-3,
        ),
        # Shipped defaults: the network predicts the image, clamped outside it to within 5 noise
        # sigma of the input, and the residual given back where it is a significant detection
        # after the network (postprocess=give_back); each is also scored without it (`_no_flux`).
        "n2v": n2v("clamped", bound=5.0, flux=1.5),
        "n2v2": n2v("clamped", n2v2=True, bound=5.0, flux=1.5),
        "n2v_5pct": n2v("clamped", 0.05, bound=5.0, flux=1.5),
        "n2v2_5pct": n2v("clamped", 0.05, n2v2=True, bound=5.0, flux=1.5),
        # The original networks (no bound) and the previous bounded correction relative to the
        # centre pixel (model.net.output=capped_residual).
        "n2v_image": n2v("image"),
        "n2v2_image": n2v("image", n2v2=True),
        "n2v_bounded_residual": n2v("capped_residual", bound=5.0),
        "n2v2_bounded_residual": n2v("capped_residual", n2v2=True, bound=5.0),
        # Noise2Noise: bounded noise prediction (the model=n2n default) and unbounded.
        "n2n": n2n(bound=4.0),
        "n2n_unbounded": n2n(),
        # Shot noise in the bound (gain 1 x softening 3 x the smallest training sky sigma).
        "n2n_shot": n2n(bound=4.0, photons_per_unit=16.0),
        # The Noise2Noise claim, apples to apples: the same network and loss, clean targets.
        "supervised_se": n2n(supervised=True),
        "supervised_se_bounded": n2n(bound=4.0, supervised=True),
    }


def training_data(pairing, steps: int, batch: int) -> SimulatedFieldDataModule:
    """The training fields every learned row (and the CAREamics rows) gets, set up."""
    datamodule = SimulatedFieldDataModule(
        pairing,
        AsinhNormalizer(),
        field_size=256,
        n_train_fields=8,
        n_val_fields=1,
        n_test_fields=1,
        patch_size=64,
        batch_size=batch,
        patches_per_epoch=steps * batch,
        seed=1,
        scene=TRAIN_SCENE,
    )
    datamodule.setup("fit")
    return datamodule


def train(spec: dict, steps: int, batch: int, seed: int = 0) -> tuple[torch.nn.Module, float]:
    """``steps`` AdamW steps of ``spec``; returns the net (eval mode) and patches/s."""
    torch.manual_seed(seed)
    datamodule = training_data(spec["pairing"](), steps, batch)
    net, loss_fn = spec["net"](), spec["loss"]()
    optimizer = torch.optim.AdamW(net.parameters(), lr=spec["lr"], weight_decay=1e-4)
    net.train()
    start = time.perf_counter()
    for raw in datamodule.train_dataloader():
        batch_ = datamodule.on_after_batch_transfer(raw, 0)
        pred = net(batch_["input"])
        loss, _ = loss_fn(pred, batch_["target"], batch_.get("loss_mask"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    return net.eval(), steps * batch / elapsed


def held_out_fields() -> list[tuple[float, np.ndarray, np.ndarray, dict]]:
    """``(fwhm, truth, noisy, catalog)`` per FWHM: exposure 1, Poisson + read noise."""
    fields = []
    for i, fwhm in enumerate(FWHMS):
        truth, catalog = render_field(512, np.random.default_rng(9000 + i), psf_fwhm=fwhm, sky=SKY)
        rng = np.random.default_rng(9100 + i)
        noisy = (rng.poisson(truth) + rng.normal(0.0, READ_NOISE, truth.shape)).astype(np.float32)
        fields.append((fwhm, truth, noisy, catalog))
    return fields


def careamics_rows(python: str, steps: int, batch: int, fields: list) -> dict[str, list]:
    """CAREamics' N2V / N2V2 / N2N (its own defaults) at the same budget on the same training
    fields, run by ``bench/careamics_rows.py`` in the Python that has CAREamics installed (its
    torch pins differ from ours). Returns its predictions of the held-out noisy fields."""
    import subprocess
    import tempfile

    datamodule = training_data(SupervisedPairing(_noise()), steps, batch)
    clean = np.stack([np.asarray(f, dtype=np.float32) for f in datamodule.train_fields])
    rng = np.random.default_rng(4)  # one fixed pair of noise draws: CAREamics takes arrays

    def draw() -> np.ndarray:
        return (rng.poisson(clean) + rng.normal(0.0, READ_NOISE, clean.shape)).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "train.npy", draw())
        np.save(folder / "train2.npy", draw())
        np.save(folder / "test.npy", np.stack([n for _, _, n, _ in fields]))
        script = Path(__file__).resolve().parent / "careamics_rows.py"
        command = [python, str(script), "--train", str(folder / "train.npy"), "--train2",
                   str(folder / "train2.npy"), "--test", str(folder / "test.npy"), "--out",
                   str(folder / "out"), "--steps", str(steps), "--batch", str(batch)]  # fmt: skip
        subprocess.run(command, check=True)
        record = json.loads((folder / "out" / "careamics.json").read_text())
        return {
            f"careamics {name} {record['careamics']} ({stats['steps']} steps)": [
                np.load(folder / "out" / f"{name}.npy"),
                stats["train_patches_per_s"],
            ]
            for name, stats in record["rows"].items()
        }


def restore_with(
    net: torch.nn.Module, noisy: np.ndarray, give_back: GiveBack | None = None
) -> np.ndarray:
    """Whole-field restoration through the asinh normalisation (what ``infer`` does per tile),
    followed by the give-back stage when given."""
    normalizer = AsinhNormalizer()
    x = torch.from_numpy(noisy)[None, None]
    offset, scale = normalizer.stats(x)
    with torch.no_grad():
        z = normalizer.forward(x, offset, scale)
        out = net(z)
        if give_back is not None:
            out = give_back(z, out, AsinhNoise(normalizer.softening))
    return normalizer.inverse(out, offset, scale)[0, 0].numpy()


def anscombe_bm3d(noisy: np.ndarray) -> np.ndarray:
    """BM3D after the generalised Anscombe transform (Poisson-Gaussian, gain 1), with the
    algebraic inverse plus its first-order bias correction."""
    import bm3d

    sigma2 = READ_NOISE**2
    vst = 2.0 * np.sqrt(np.maximum(noisy + 3.0 / 8.0 + sigma2, 0.0))
    den = bm3d.bm3d(vst, sigma_psd=1.0)
    return ((den / 2.0) ** 2 - 3.0 / 8.0 - sigma2 + 0.25).astype(np.float32)


def classical_methods() -> dict:
    methods = {
        "gaussian_1px": lambda noisy: ndimage.gaussian_filter(noisy, 1.0),
        "median_3x3": lambda noisy: ndimage.median_filter(noisy, 3),
    }
    try:
        import bm3d  # noqa: F401

        methods["bm3d_vst"] = anscombe_bm3d
    except ImportError:
        print("bm3d not installed: no BM3D-VST row (pip install bm3d)")
    return methods


def asinh_psnr(pred: np.ndarray, truth: np.ndarray, noisy: np.ndarray) -> float:
    """PSNR in the normalised space of the noisy frame (same map for every method)."""
    normalizer = AsinhNormalizer()
    x = torch.from_numpy(noisy)[None, None]
    offset, scale = normalizer.stats(x)

    def norm(a):
        return normalizer.forward(torch.from_numpy(a)[None, None].float(), offset, scale).numpy()

    t = norm(truth)
    return psnr(norm(pred), t, float(t.max() - t.min()))


def measures(restored: np.ndarray, truth: np.ndarray, noisy: np.ndarray, catalog: dict) -> dict:
    sky, fwhm = catalog["sky"], catalog["psf_fwhm"]
    empty = np.abs(truth - sky) < 0.5
    h, w = truth.shape
    yy, xx = np.mgrid[:h, :w]
    stars = catalog["kind"] == 0
    bias, peaks = [], []
    radius = 2.0 * fwhm
    for x, y in zip(catalog["x"][stars], catalog["y"][stars], strict=True):
        if not (radius < x < w - radius - 1 and radius < y < h - radius - 1):
            continue
        inside = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
        true_flux = float((truth[inside] - sky).sum())
        noise = np.sqrt(float(truth[inside].sum()) + inside.sum() * READ_NOISE**2)
        if true_flux > 20 * noise:
            bias.append(float((restored[inside] - sky).sum()) / true_flux - 1.0)
        py, px = int(round(y)), int(round(x))
        true_peak = truth[py, px] - sky
        if true_peak > 50 * np.sqrt(truth[py, px] + READ_NOISE**2):
            peaks.append(float((restored[py, px] - sky) / true_peak))
    data_range = float(truth.max() - truth.min())
    return {
        "psnr_e": psnr(restored, truth, data_range),
        "psnr_asinh": asinh_psnr(restored, truth, noisy),
        "data_range_e": data_range,
        "sky_noise_ratio": float(
            np.std((restored - truth)[empty]) / np.std((noisy - truth)[empty])
        ),
        "median_flux_bias": float(np.median(bias)) if bias else float("nan"),
        "n_flux_stars": len(bias),
        "peak_ratio": float(np.median(peaks)) if peaks else float("nan"),
        "n_peak_stars": len(peaks),
    }


def table(rows: dict, steps: int, batch: int) -> str:
    lines = [
        "# Self-supervised denoising benchmark",
        "",
        f"Held-out 512x512 Moffat fields (seeds 9000+), FWHM {', '.join(map(str, FWHMS))} px, "
        f"sky {SKY:g} e-, Poisson + {READ_NOISE:g} e- read noise. Learned rows: {steps} AdamW "
        f"steps of {batch} patches of 64x64 each, randomised training scenes, CPU. PSNR(e-) data "
        "range = max - min of each clean field. Flux bias: median over stars with S/N > 20 "
        "(r = 2 FWHM); peak ratio: median over stars with true peak > 50 sigma.",
        "",
        "Rows: `n2v`/`n2v2` are the shipped defaults (the network predicts the image, clamped "
        "to within 5 noise sigma of the input outside the network, and the residual input - "
        "output given back at evaluation where its 1.5 px mean is a significant detection; "
        "`*_no_flux`: the same weights without that); "
        "`*_5pct` hide 5 % of the "
        "pixels instead of 0.2 %; `*_image` the original networks (no bound); "
        "`*_bounded_residual` the earlier correction relative to the centre pixel; `n2n` is "
        "ResUNet-SE with L2 and its noise bounded at 4 sigma (`n2n_unbounded`: without); "
        "`supervised` the default bounded residual U-Net with L1+SSIM+gradient "
        "(`supervised_unbounded`: the previous, unbounded default). Star statistics are "
        "medians over few stars (see the JSON for counts): differences of a few % are noise.",
        "",
        "| method | FWHM | PSNR e- (dB) | PSNR asinh (dB) | sky noise ratio | flux bias | "
        "peak ratio | train patches/s | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per_fwhm in rows.items():
        for fwhm, m in per_fwhm.items():
            speed = m.get("patches_per_s")
            lines.append(
                f"| {name} | {fwhm} | {m['psnr_e']:.2f} | {m['psnr_asinh']:.2f} | "
                f"{m['sky_noise_ratio']:.3f} | {100 * m['median_flux_bias']:+.1f}% | "
                f"{m['peak_ratio']:.3f} | {'-' if speed is None else f'{speed:.1f}'} | "
                f"{'-' if speed is None else f'{steps * batch / speed:.0f}'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--methods", default="n2v,n2v2,n2n,supervised")
    parser.add_argument("--no-classical", action="store_true")
    parser.add_argument(
        "--append", action="store_true", help="add rows to the existing results (same settings)"
    )
    parser.add_argument("--out", default=str(RESULTS / "self_supervised"))
    parser.add_argument(
        "--careamics-python",
        default=None,
        help="a Python with CAREamics installed (optional): adds its N2V/N2V2/N2N rows",
    )
    args = parser.parse_args()
    # One thread: on a shared 2-core machine, more threads thrash and slow every method alike.
    torch.set_num_threads(1)

    fields = held_out_fields()
    rows: dict[str, dict] = {
        "noisy input": {f: measures(n, t, n, c) for f, t, n, c in fields},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.with_suffix(".json").exists():
        rows = json.loads(out.with_suffix(".json").read_text())

    def write() -> None:
        # After every row, so a run cut short still leaves the rows it finished.
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=float))
        out.with_suffix(".md").write_text(table(rows, args.steps, args.batch))

    specs = learned_methods()
    for name in [m for m in args.methods.split(",") if m]:  # --methods "": peers/classical only
        net, speed = train(specs[name], args.steps, args.batch)
        give_back = specs[name].get("give_back")
        rows[name] = {}
        for f, t, n, c in fields:
            restored = restore_with(net, n, give_back)
            rows[name][f] = measures(restored, t, n, c) | {"patches_per_s": speed}
        if give_back is not None:
            # Same weights without the give-back after the network (the ablation is free).
            rows[f"{name}_no_flux"] = {
                f: measures(restore_with(net, n), t, n, c) | {"patches_per_s": speed}
                for f, t, n, c in fields
            }
        print(name, f"{args.steps * args.batch / speed:.0f} s", rows[name], flush=True)
        write()
    if args.careamics_python:
        for name, (predictions, speed) in careamics_rows(
            args.careamics_python, args.steps, args.batch, fields
        ).items():
            rows[name] = {
                f: measures(p, t, n, c) | {"patches_per_s": speed}
                for p, (f, t, n, c) in zip(predictions, fields, strict=True)
            }
            write()
    if not args.no_classical:
        for name, method in classical_methods().items():
            rows[name] = {f: measures(method(n), t, n, c) for f, t, n, c in fields}
            print(name, "done", flush=True)
            write()
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
