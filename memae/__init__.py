"""MemAE (Gong et al., "Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for
Unsupervised Anomaly Detection", ICCV 2019) and its class-conditional extension C-MemAE.

Paper: https://arxiv.org/abs/1904.02639. See ``memae/README.md`` for the reproduced tables and every deviation.
"""

from memae.losses import addressing_entropy, memae_loss
from memae.memory import ConditionalMemory, MemoryModule, hard_shrink
from memae.models import Autoencoder, ConditionalBottleneck, build_model
from memae.scores import anomaly_scores, reconstruction_error

__all__ = [
    "Autoencoder",
    "ConditionalBottleneck",
    "ConditionalMemory",
    "MemoryModule",
    "addressing_entropy",
    "anomaly_scores",
    "build_model",
    "hard_shrink",
    "memae_loss",
    "reconstruction_error",
]
