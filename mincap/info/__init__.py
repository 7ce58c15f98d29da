"""Information diagnostics (issue 18): mutual information inside mincap networks.

- `estimators`: binning, KDE bounds and exact plug-in MI, in bits;
- `activations`: the layers of a network and their activations on a sample;
- `analyze`: `mincap info TARGET` (one network, per layer, on the train split);
- `trajectory`: `mincap info --trajectory` (train an MLP, MI per epoch);
- `figures`: the information plane;
- `ladder`: the chosen network of every rung, analysed;
- `ladder_table`: those rows as markdown (studies/info/README.md and studies/RESULTS.md).
"""
