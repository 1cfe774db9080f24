"""minivae: variational autoencoders from scratch in NumPy, every gradient derived by hand.

    from minivae import VAE, gradcheck, verify

See README.md for the tour, ``lessons/`` for the course, and
``python -m minivae --help`` for the command line.
"""
from . import gradcheck, verify
from .vae import VAE, LossAndGrads, Terms

__all__ = ["VAE", "LossAndGrads", "Terms", "gradcheck", "verify"]
__version__ = "0.1.0"
