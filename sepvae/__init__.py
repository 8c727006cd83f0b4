"""sepvae: two-speaker speech separation with variational autoencoders."""

__version__ = "0.1.0"

__all__ = ["Separator", "SepvaeError", "__version__"]

from sepvae.errors import SepvaeError


def __getattr__(name):
    # Lazy so that `import sepvae` (and `sepvae --help`) does not import torch.
    if name == "Separator":
        from sepvae.separator import Separator

        return Separator
    raise AttributeError(f"module 'sepvae' has no attribute {name!r}")
