"""Multi-Class Hypersphere Anomaly Detection (MCHAD) and its baselines.

Paper: Kirchheim, Filax, Ortmeier, "Multi-Class Hypersphere Anomaly Detection", ICPR 2022
(IEEE Xplore 9956337; code https://github.com/kkirchheim/mchad).

The models, losses and scores import only torch; ``mchad.experiments`` defines ``PAPER``, the main table as cells
that ``main.py`` runs.
"""

from mchad.losses import CACLoss, IILoss, LossTerms, MCHADLoss, SoftmaxLoss
from mchad.models import CenterNet, ClassAnchors, ClassCenters, RunningCenters, SmallResNet, WideResNet
from mchad.scores import predict, score

__all__ = [
    "CACLoss",
    "CenterNet",
    "ClassAnchors",
    "ClassCenters",
    "IILoss",
    "LossTerms",
    "MCHADLoss",
    "RunningCenters",
    "SmallResNet",
    "SoftmaxLoss",
    "WideResNet",
    "predict",
    "score",
]
