"""texad: reproducible benchmark of diffusion-based texture anomaly detection."""

__version__ = "0.1.0"
