"""Training: the engine (`engine`: whole-tensor data, randperm batches, AdamW one-cycle), the
batched engine for groups of like-shaped trials (`batched`, `grouped`), distillation teachers
(`distill`) and one `mincap train` run end to end (`experiment`)."""
