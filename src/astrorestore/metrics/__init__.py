"""Metrics: the one home of every measure's definition.

Decision (issue 22): a metric is defined here and only here; everything else calls it.

- ``metrics/`` defines measures: a number computed from images, with its convention stated
  (data range, units, what "better" means): PSNR/SSIM in the normalised space, in physical
  units and for photographs (:mod:`~astrorestore.metrics.image_quality`), colour error and
  colourfulness (:mod:`~astrorestore.metrics.colour`), LPIPS
  (:mod:`~astrorestore.metrics.lpips_metric`), and what can be known without a truth
  (:mod:`~astrorestore.metrics.no_truth`); realism and calibration measures belong here too.
- ``evaluation/`` holds astronomy evaluation *procedures* that use metrics: source detection,
  photometry, star fits, residual analysis, reports, plots and classical baselines.
- The LightningModules (``modules/``), the callbacks, ``infer.py report=`` and ``bench/`` call
  these functions and log or print their results; they do not re-define a measure.

``metrics`` sits in the layer above ``data`` (it may use a normaliser, as the physical-units
quality block does) and below ``evaluation``, ``modules`` and everything that reports.
"""
