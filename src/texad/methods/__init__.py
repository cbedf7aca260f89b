"""Anomaly-detection methods built on the shared diffusion core, backbones and evaluation grid."""
