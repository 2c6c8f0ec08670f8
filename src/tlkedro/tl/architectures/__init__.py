"""The architecture registry: every network is a ``TLModel`` built by name.

``create_architecture(name, **kwargs)`` builds one, ``list_architectures()`` gives the names, and
``python -m tlkedro.tl.architectures`` prints them with their stages. Importing this package imports
every family module, which registers its builders. See docs/architectures.md.
"""

from tlkedro.tl.architectures import cbr, monai3d, sfcn, swin3d, timeseries1d, timm2d  # noqa: F401  (imported for their registrations)
from tlkedro.tl.architectures.base import (
    TLModel,
    create_architecture,
    list_architectures,
    register_architecture,
)

__all__ = ["TLModel", "create_architecture", "list_architectures", "register_architecture"]
