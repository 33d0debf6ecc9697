"""Benchmark the self-supervised denoisers against supervised training and classical filters.

Every learned method gets the same training data, the same number of optimisation steps and the
same batch (``--steps``, ``--batch``), and is scored on the same held-out fields; classical rows
need no training. Each learned row is a shipped model config composed with a few overrides
(``METHODS``): network, loss, optimiser, pairing and noise come from ``configs/``. Training
replicates ``RegressionModule.training_step`` (pairing on the batch, asinh normalisation, net,
masked loss, the config's optimiser) without Lightning, so the time measured is the method's own.

- Training data: ``data=simulated_randomized`` (seed 1) for every row, randomised scenes (PSF
  FWHM 1.2-5 px, several families with spikes, sky 5-200 e-, crowding, saturation) so no method
  is taught one PSF; the ``noise`` group's Poisson-Gaussian noise drawn per batch. N2V/N2V2 see only the noisy draw, N2N two
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

Writes ``bench/results/self_supervised.md`` (and ``.json``; ``--out STEM``).
Usage: ``python bench/bench_self_supervised.py [--steps 200] [--batch 8] [--methods n2v,n2v2,...]
[--size 512] [--out STEM]``; ``--smoke`` runs a tiny budget (does the bench still run?).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, add_output_options, bm3d_or_note, compose
from scipy import ndimage

from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.simulation.scene import render_field
from astrorestore.metrics.image_quality import psnr
from astrorestore.postprocess import Postprocess

FWHMS = (1.6, 2.5, 3.5)
READ_NOISE = 5.0
SKY = 20.0

# The original Noise2Void output: the image, no bound, no give-back.
UNBOUNDED = ["model.net.output=image", "model.net.bound_sigmas=null", "postprocess=none"]
# Each learned row is the shipped config of a model with the overrides that make the row; the
# defaults themselves (networks, bounds, give-back, losses, learning rates, noise) are read from
# configs/, never written here.
METHODS: dict[str, list[str]] = {
    # model=supervised: the bounded residual U-Net, L1 + SSIM + gradient; and the previous,
    # unbounded default.
    "supervised": ["model=supervised"],
    "supervised_unbounded": ["model=supervised_unbounded"],
    # Shipped defaults: the network predicts the image, clamped outside it to within 5 noise
    # sigma of the input, and the residual given back where it is a significant detection
    # after the network (model=n2v's postprocess=give_back); each is also scored without it
    # (`_no_flux`).
    "n2v": ["model=n2v"],
    "n2v2": ["model=n2v2"],
    "n2v_5pct": ["model=n2v", "data.pairing.masked_fraction=0.05"],
    "n2v2_5pct": ["model=n2v2", "data.pairing.masked_fraction=0.05"],
    # The original networks (no bound) and the previous bounded correction relative to the
    # centre pixel (model.net.output=capped_residual; the rows keep their earlier names).
    "n2v_image": ["model=n2v", *UNBOUNDED],
    "n2v2_image": ["model=n2v2", *UNBOUNDED],
    "n2v_bounded_residual": [
        "model=n2v",
        "model.net.output=capped_residual",
        "postprocess=none",
    ],  # fmt: skip
    "n2v2_bounded_residual": [
        "model=n2v2",
        "model.net.output=capped_residual",
        "postprocess=none",
    ],  # fmt: skip
    # Noise2Noise: bounded noise prediction (the model=n2n default) and unbounded.
    "n2n": ["model=n2n"],
    "n2n_unbounded": ["model=n2n", "model.net.bound_sigmas=null"],
    # Shot noise in the bound (gain 1 x softening 3 x the smallest training sky sigma).
    "n2n_shot": ["model=n2n", "model.net.noise.photons_per_unit=16.0"],
    # Recorrupted-to-Recorrupted: single noisy frames split by a draw from their own noise
    # model (the Poisson-Gaussian variance y / gain + read^2), the default's network, L2.
    "r2r": ["model=r2r"],
    # The same weights' one plain pass on the frame (no mean over recorruptions), and the
    # split alpha = 0.2 (input only 1.25x noisier than the frame) with and without the mean.
    "r2r_plain": ["model=r2r", "model.recorrupted_mean=null"],
    "r2r_alpha02": ["model=r2r", "data.pairing.alpha=0.2"],
    "r2r_alpha02_plain": ["model=r2r", "data.pairing.alpha=0.2", "model.recorrupted_mean=null"],
    # SURE for Poisson-Gaussian noise: the frame as it is, the loss from the network's divergence.
    "sure": ["model=sure"],
    # The Noise2Noise claim, apples to apples: the same network and loss, clean targets.
    "supervised_se": ["model=n2n", "pairing=supervised", "model.net.bound_sigmas=null"],
    "supervised_se_bounded": ["model=n2n", "pairing=supervised"],
}


def training_config(method: list[str], steps: int, batch: int, extra: list[str] = ()):
    """The composed config of a learned row: every row trains on the same randomised fields
    (``data=simulated_randomized``, seed 1, ``steps * batch`` patches) whatever data its model
    would pick; ``extra`` are further overrides (e.g. ``--smoke``'s small fields)."""
    data = [
        "data=simulated_randomized",
        "data.seed=1",
        "data.n_val_fields=1",
        "data.n_test_fields=1",
        f"data.batch_size={batch}",
        f"data.patches_per_epoch={steps * batch}",
    ]
    # LPIPS is a validation metric: the bench trains the network alone.
    return compose([*method, *data, "model.compute_lpips=false", *extra])


def train(cfg, seed: int = 0) -> tuple[torch.nn.Module, Postprocess, float]:
    """One epoch (``data.patches_per_epoch`` patches) of the composed config's network, loss and
    optimiser, the pairing drawn on each batch and the loss the module's own ``training_step``
    (``model=sure``'s needs the network's derivatives, not a pixel loss); returns the net (eval mode), the config's post-processing (``postprocess``, what
    validation and ``infer.py`` apply after the network) and patches/s."""
    from hydra.utils import instantiate

    from astrorestore.train import build

    torch.manual_seed(seed)
    datamodule, module = build(cfg)
    datamodule.setup("fit")
    net = module.net
    optimizer = instantiate(cfg.model.optimizer)(net.parameters())
    net.train()
    patches = 0
    start = time.perf_counter()
    for step, raw in enumerate(datamodule.train_dataloader()):
        batch_ = datamodule.on_after_batch_transfer(raw, 0)
        with warnings.catch_warnings():  # its self.log() has no trainer here
            warnings.simplefilter("ignore")
            loss = module.training_step(batch_, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        patches += batch_["input"].shape[0]
    elapsed = time.perf_counter() - start
    # What validation and infer.py restore with (model=r2r: the mean over recorruptions).
    restoring = module.restoring_fn() if hasattr(module, "restoring_fn") else net
    return restoring.eval(), module.postprocess, patches / elapsed


def held_out_fields(size: int = 512) -> list[tuple[float, np.ndarray, np.ndarray, dict]]:
    """``(fwhm, truth, noisy, catalog)`` per FWHM: exposure 1, Poisson + read noise."""
    fields = []
    for i, fwhm in enumerate(FWHMS):
        rng = np.random.default_rng(9000 + i)
        truth, catalog = render_field(size, rng, psf_fwhm=fwhm, sky=SKY)
        rng = np.random.default_rng(9100 + i)
        noisy = (rng.poisson(truth) + rng.normal(0.0, READ_NOISE, truth.shape)).astype(np.float32)
        fields.append((fwhm, truth, noisy, catalog))
    return fields


def careamics_rows(python: str, cfg, steps: int, batch: int, fields: list) -> dict[str, list]:
    """CAREamics' N2V / N2V2 / N2N (its own defaults) at the same budget on the same training
    fields, run by ``bench/careamics_rows.py`` in the Python that has CAREamics installed (its
    torch pins differ from ours). ``cfg``: a learned row's config, whose training fields and
    read noise CAREamics gets. Returns its predictions of the held-out noisy fields."""
    import subprocess
    import tempfile

    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    clean = np.stack([np.asarray(f, dtype=np.float32) for f in datamodule.train_fields])
    read_noise = float(cfg.data.pairing.noise.read_noise)
    rng = np.random.default_rng(4)  # one fixed pair of noise draws: CAREamics takes arrays

    def draw() -> np.ndarray:
        return (rng.poisson(clean) + rng.normal(0.0, read_noise, clean.shape)).astype(np.float32)

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
    net: torch.nn.Module, noisy: np.ndarray, stages: Postprocess | None = None
) -> np.ndarray:
    """Whole-field restoration through the asinh normalisation (what ``infer`` does per tile),
    followed by the post-processing's tile stages (the give-back) when given."""
    normalizer = AsinhNormalizer()
    x = torch.from_numpy(noisy)[None, None]
    offset, scale = normalizer.stats(x)
    with torch.no_grad():
        z = normalizer.forward(x, offset, scale)
        out = net(z)
        if stages is not None:
            out = stages.tiles(z, out)
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
    if bm3d_or_note("bench_self_supervised"):
        methods["bm3d_vst"] = anscombe_bm3d
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


def table(rows: dict, steps: int, batch: int, size: int = 512, patch: int = 64) -> str:
    lines = [
        "# Self-supervised denoising benchmark",
        "",
        f"Held-out {size}x{size} Moffat fields (seeds 9000+), FWHM {', '.join(map(str, FWHMS))} px, "
        f"sky {SKY:g} e-, Poisson + {READ_NOISE:g} e- read noise. Learned rows: {steps} AdamW "
        f"steps of {batch} patches of {patch}x{patch} each, randomised training scenes, CPU. PSNR(e-) data "
        "range = max - min of each clean field. Flux bias: median over stars with S/N > 20 "
        "(r = 2 FWHM); peak ratio: median over stars with true peak > 50 sigma.",
        "",
        "Rows: `n2v`/`n2v2` are the shipped defaults (the network predicts the image, clamped "
        "to within 5 noise sigma of the input outside the network, and the residual input - "
        "output given back after the network (`postprocess=give_back`) where its 1.5 px mean is "
        "a significant detection; "
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


# The smallest budget (``--smoke``): is the bench still whole? Two steps of two 32 px patches of
# one 64 px training field, 64 px held-out fields, two learned rows. Its figures mean nothing.
SMOKE_DATA = ["data.field_size=64", "data.n_train_fields=1", "data.patch_size=32",
              "data.val_patches_per_field=1"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--methods",
        default=None,
        help=f"default n2v,n2v2,n2n,supervised (--smoke: n2v,r2r); of {list(METHODS)}",
    )
    parser.add_argument("--size", type=int, default=512, help="held-out field size (px)")
    parser.add_argument("--no-classical", action="store_true")
    parser.add_argument(
        "--append", action="store_true", help="add rows to the existing results (same settings)"
    )
    add_output_options(
        parser,
        "2 steps of two rows (n2v, r2r) on 64 px fields",
        RESULTS / "self_supervised",
        "output stem (STEM.json, STEM.md)",
    )
    parser.add_argument(
        "--careamics-python",
        default=None,
        help="a Python with CAREamics installed (optional): adds its N2V/N2V2/N2N rows",
    )
    args = parser.parse_args()
    extra = []
    if args.smoke:
        args.steps, args.batch, args.size, extra = 2, 2, 64, SMOKE_DATA
    if args.methods is None:
        args.methods = "n2v,r2r" if args.smoke else "n2v,n2v2,n2n,supervised"
    unknown = [m for m in args.methods.split(",") if m and m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; use some of {list(METHODS)}")
    # One thread: on a shared 2-core machine, more threads thrash and slow every method alike.
    torch.set_num_threads(1)

    fields = held_out_fields(args.size)
    rows: dict[str, dict] = {
        "noisy input": {f: measures(n, t, n, c) for f, t, n, c in fields},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.with_suffix(".json").exists():
        rows = json.loads(out.with_suffix(".json").read_text())
    patch = int(training_config([], args.steps, args.batch, extra).data.patch_size)

    def write() -> None:
        # After every row, so a run cut short still leaves the rows it finished.
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=float))
        out.with_suffix(".md").write_text(table(rows, args.steps, args.batch, args.size, patch))

    write()
    for name in [m for m in args.methods.split(",") if m]:  # --methods "": peers/classical only
        net, stages, speed = train(training_config(METHODS[name], args.steps, args.batch, extra))
        rows[name] = {}
        for f, t, n, c in fields:
            restored = restore_with(net, n, stages)
            rows[name][f] = measures(restored, t, n, c) | {"patches_per_s": speed}
        if stages.on_tiles:
            # Same weights without the give-back after the network (the ablation is free).
            rows[f"{name}_no_flux"] = {
                f: measures(restore_with(net, n), t, n, c) | {"patches_per_s": speed}
                for f, t, n, c in fields
            }
        print(name, f"{args.steps * args.batch / speed:.0f} s", rows[name], flush=True)
        write()
    if args.careamics_python:
        cfg = training_config(METHODS["supervised"], args.steps, args.batch, extra)
        for name, (predictions, speed) in careamics_rows(
            args.careamics_python, cfg, args.steps, args.batch, fields
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
