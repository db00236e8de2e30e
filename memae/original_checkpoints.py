"""The official MemAE code's trained models (donggong1/memae-anomaly-detection), loaded into our autoencoders.

The official ``script_training.py`` saves ``model.state_dict()`` with ``torch.save`` (``<setting>_epoch_NNNN.pt``,
``..._final.pt``, ``..._snap.pt``). Its models (``models/memae_3dconv.py``, ``models/ae_3dconv.py``) name their
tensors ``encoder.<i>.*`` and ``decoder.<i>.*`` (``nn.Sequential`` of conv, BatchNorm, LeakyReLU per layer, the
decoder's last layer a lone transposed conv) and the memory ``mem_rep.memory.weight`` (N × C). Our
:class:`~memae.models.Autoencoder` has the same encoder and decoder layout, so only the memory is renamed
(``bottleneck.memory``). A file with ``mem_rep.*`` tensors is a MemAE, one without an AE.

The file is read without running its code (tensors and containers only, :mod:`common.safe_pickle`). The official
memory addresses by the dot product, so the model is built with ``similarity="dot"``; the shrinkage threshold λ
is not saved in the file and comes from the configuration. The released models are the 3-D video networks
(Conv3d): their 5-D kernels do not fit our 2-D image networks, and the error says so, tensor by tensor.
"""

from __future__ import annotations

from pathlib import Path

from common.safe_pickle import TENSOR_GLOBALS, load_torch_file, restricted_unpickler
from common.weight_mapping import as_state_dict, load_renamed
from memae.config import ImageSetting
from memae.models import Autoencoder, build_model

MEMORY_KEY = "mem_rep.memory.weight"
"""The official memory's N × C slots."""

_OURS_TO_OFFICIAL = {"bottleneck.memory": MEMORY_KEY, "bottleneck.shrink_threshold": None}
_UNPICKLER = restricted_unpickler(TENSOR_GLOBALS, "a MemAE weights file holds tensors only")


def official_key(key: str) -> str | None:
    """The official state-dict name of our ``key`` (None: our shrinkage threshold, not in the file)."""
    return _OURS_TO_OFFICIAL.get(key, key)


def load_original(path: str | Path, config: ImageSetting) -> Autoencoder:
    """Our autoencoder of ``config.data.architecture`` with the weights of the official state dict at ``path``.

    A MemAE (the file has ``mem_rep.memory.weight``) gets ``config.memory``'s N and λ and dot-product addressing;
    otherwise the plain AE.

    Raises:
        MissingDataError: no such file.
        DataError: the file holds anything but tensors, or its tensors do not fit (one line naming the file and
            the missing, extra or mis-shaped tensors).
    """
    state = as_state_dict(load_torch_file(path, _UNPICKLER), path)
    memory = config.memory
    model = build_model(
        config.data.architecture,
        "memae" if any(key.startswith("mem_rep.") for key in state) else "ae",
        num_slots=memory.num_slots,
        shrink_threshold=memory.shrink_threshold,
        similarity="dot",
    )
    load_renamed(model, state, official_key, path)
    return model
