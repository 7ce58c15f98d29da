"""One-shot search: one weight-shared supernet per search space, each trial one sub-network of it.

- `space`: `SupernetSpace` (the family and its elastic ranges) and `SubnetConfig` (one sub-network);
- `supernet`: the supernet module (elastic width, depth and bits; LSQ steps per layer, width and
  bits) and the importance sort of its channels;
- `trainer`: sandwich-rule training with in-place distillation, cached and resumable per epoch;
- `extract`: a sub-network as an ordinary `Spec` + state dict + learned steps, and batch-norm
  re-estimation on train images;
- `score`: the sub-network's `.mincap` file written, decoded and the decoded network scored;
- `trial`: the Optuna objective of one-shot trials, with fine-tuning of the promising ones.
"""
