"""Shared half of the suite: datasets and their file formats, downloads, transforms, OOD metrics,
Ignite glue (progress, tensorboard, checkpoints, seeding, distributed launch) and result tables."""
