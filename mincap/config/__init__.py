"""Settings: one frozen dataclass per block (training, compression, study file).

`mincap.config` re-exports the training and compression settings (`settings`); the study file
is `mincap.config.study`, which this package does not import so that reading a `TrainConfig`
never pulls in the study parser.
"""

from mincap.config.settings import *  # noqa: F403
from mincap.config.settings import __all__  # noqa: F401
