"""Counts released with differential privacy (no Dagster): diffprivlib's Laplace or analytic Gaussian mechanism.

The unit protected is one *record*: one training interaction (popularity), one shown item with its click
(online CTR), one evaluated user (the report's user count). A record changes each count it touches by at most 1,
so a vector of counts in which it touches `cells` entries has L1 sensitivity `cells` (the Laplace mechanism's) and
L2 sensitivity sqrt(cells) (the Gaussian's). Each `release` spends `epsilon` (and `delta`); releases add up
(sequential composition). A user with m records is protected at m * epsilon (group privacy), not epsilon.

With a seed the noise is a function of (seed, stream): the same counts give the same release, so publishing them
again spends nothing new, but whoever knows the seed can subtract the noise: keep it as secret as a key. Without a
seed diffprivlib draws from the operating system's secure generator.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import zlib
from dataclasses import dataclass, field

import numpy as np

MECHANISMS = ("laplace", "gaussian")
DEFAULT_DELTA = 1e-6


class PrivacyError(ValueError):
    """A malformed privacy setting (epsilon <= 0, an unknown mechanism, delta outside (0, 1))."""


def _diffprivlib_mechanisms() -> types.ModuleType:
    """`diffprivlib.mechanisms`. diffprivlib 0.6.6's package __init__ also imports its models, which need
    `sklearn.tree._tree.DOUBLE` (gone in scikit-learn 1.9); the mechanisms need none of that, so they are loaded
    under a bare parent package when the full import fails."""
    try:
        return importlib.import_module("diffprivlib.mechanisms")
    except ImportError:
        spec = importlib.util.find_spec("diffprivlib")
        if spec is None:
            raise PrivacyError("differential privacy needs diffprivlib: pip install 'diffprivlib==0.6.6'") from None
        for name in [n for n in sys.modules if n == "diffprivlib" or n.startswith("diffprivlib.")]:
            del sys.modules[name]  # the half-imported package
        package = types.ModuleType("diffprivlib")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["diffprivlib"] = package
        return importlib.import_module("diffprivlib.mechanisms")


@dataclass(frozen=True)
class CountRelease:
    """How counts leave the platform: exactly (epsilon = inf, the default) or with noise of this budget."""

    epsilon: float = math.inf
    mechanism: str = "laplace"
    delta: float = DEFAULT_DELTA  # the Gaussian mechanism's; Laplace is pure epsilon-DP
    seed: int | None = field(default=None, repr=False)  # a secret: see the module docstring

    def __post_init__(self):
        if not self.epsilon > 0:  # also rejects nan
            raise PrivacyError(f"epsilon={self.epsilon}: must be > 0 (inf: exact counts)")
        if self.mechanism not in MECHANISMS:
            raise PrivacyError(f"mechanism={self.mechanism!r}: use one of {', '.join(MECHANISMS)}")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"delta={self.delta}: must be in (0, 1)")

    @property
    def exact(self) -> bool:
        return math.isinf(self.epsilon)

    def _mechanism(self, cells: int, stream: str):
        mechanisms = _diffprivlib_mechanisms()
        random_state = None if self.seed is None else np.random.RandomState([self.seed, zlib.crc32(stream.encode())])
        if self.mechanism == "laplace":
            return mechanisms.Laplace(epsilon=self.epsilon, sensitivity=float(cells), random_state=random_state)
        return mechanisms.GaussianAnalytic(epsilon=self.epsilon, delta=self.delta, sensitivity=math.sqrt(cells),
                                           random_state=random_state)

    def noise_std(self, cells: int = 1) -> float:
        """Standard deviation of the noise on each released count (0 when exact)."""
        return 0.0 if self.exact else math.sqrt(self._mechanism(cells, "").variance(0.0))

    def release(self, counts, cells: int = 1, stream: str = "counts") -> np.ndarray:
        """`counts` (any shape) plus independent noise per entry, as float64; a copy of them when exact.
        `cells`: how many of these counts one record can change (by 1 each). `stream` names the release, so that
        different releases under one seed get independent noise."""
        values = np.asarray(counts, dtype=np.float64)
        if self.exact:
            return values.copy()
        if cells < 1:
            raise PrivacyError(f"cells={cells}: a record touches at least one count")
        mechanism = self._mechanism(cells, stream)
        return np.array([mechanism.randomise(v) for v in values.ravel().tolist()], dtype=np.float64).reshape(values.shape)

    def params(self) -> dict[str, str]:
        """What MLflow and the report record: epsilon ('inf' when exact), the mechanism, delta when it applies."""
        if self.exact:
            return {"dp_epsilon": "inf"}
        return {"dp_epsilon": f"{self.epsilon:g}", "dp_mechanism": self.mechanism,
                **({"dp_delta": f"{self.delta:g}"} if self.mechanism == "gaussian" else {})}

    def describe(self) -> str:
        if self.exact:
            return "off (exact counts)"
        delta = f", delta {self.delta:g}" if self.mechanism == "gaussian" else ""
        return f"{self.mechanism} noise, epsilon {self.epsilon:g}{delta} per released table"


EXACT = CountRelease()
