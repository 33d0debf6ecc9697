"""What is done to a restored frame after the network: the post-processing stages.

Networks (:mod:`astrorestore.nets`) map tensors to tensors, the same in training and
evaluation. The stages here run after them, configured by the ``postprocess`` config group
(``configs/postprocess/``) and applied alike by validation/test, by the
:class:`~astrorestore.inference.restorer.Restorer` (``infer.py``, ``pipeline.py``) and by the
benches: ``give_back`` (:mod:`.give_back`) and ``psf_cores`` (:mod:`.psf_cores`). The config
API is in :mod:`.stages`.
"""

from astrorestore.postprocess.stages import (
    STAGES,
    Postprocess,
    build_postprocess,
    check_postprocess,
    merge_postprocess,
    noise_of,
)

__all__ = [
    "STAGES",
    "Postprocess",
    "build_postprocess",
    "check_postprocess",
    "merge_postprocess",
    "noise_of",
]
