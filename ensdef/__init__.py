"""ensdef: ensemble defenses against adversarial examples.

The library takes models and tensors and never imports Ray; ``deployments/`` (Ray Serve) and
``tune/`` (Ray Tune) are thin layers on top of it.
"""

from ensdef.types import ABSTAIN, Decision, Role

__version__ = "0.1.0"

__all__ = ["ABSTAIN", "Decision", "Role", "__version__"]
