"""Optuna search for the smallest verified network that reaches the target.

One module per concept, as Optuna keeps its optimize loop apart from storages and samplers:

- `space`: what a trial is (`sample_trial`, the seed presets' parameters, which draws are structural);
- `storage`: where a study lives (storages, sampler, artifact store, `open_study`);
- `early_stop`: the early-stopping rule for multi-objective studies;
- `fidelity`: multi-fidelity screening (a short run first; only promoted trials train in full);
- `objective`: one trial, trained, compressed, decoded and evaluated on validation;
- `batched`: the loop that trains groups of like-shaped trials as one computation (GPU path);
- `budget`: when a run stops (networks counted, failures alike) and what an all-failed run says;
- `monitor`: the live progress table, read from storage;
- `run`: workers, signals, seeds, `run_search`;
- `replicates`: the chosen configuration retrained with more seeds (`mincap summary --replicates`).
"""

from mincap.search.early_stop import EarlyStopRule
from mincap.search.objective import Objective
from mincap.search.run import SearchOptions, run_search
from mincap.search.space import preset_params, sample_trial
from mincap.search.storage import make_storage, open_study, search_wall_s

__all__ = ["EarlyStopRule", "Objective", "SearchOptions", "make_storage", "open_study", "preset_params",
           "run_search", "sample_trial", "search_wall_s"]
