"""InvGlow: Schirrmeister et al., "Understanding anomaly detection with deep invertible networks through hierarchies
of distributions and features", NeurIPS 2020 (arXiv 2006.10848).

Glow with independent per-scale priors (:mod:`invglow.models`), its layers (:mod:`invglow.flows`), the outlier
loss (:mod:`invglow.losses`), likelihood-ratio / final-scale / Serra scores (:mod:`invglow.scores`), Ignite
engines and ``fit`` (:mod:`invglow.engine`), the image sets (:mod:`invglow.data`) and the experiments ``main.py``
runs as cells (:mod:`invglow.experiments`: the AUROC tables and the local-vs-semantic analysis).
"""
