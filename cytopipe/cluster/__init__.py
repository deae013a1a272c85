"""FlowSOM-style clustering of gated lymphocytes, shared across a cohort, annotated by rules and
cross-checked with the automated gates.

Why a cohort model: a longitudinal study asks "how much of metacluster 3 is there at day 180",
which only makes sense when metacluster 3 is the same cells at every timepoint. So one
self-organizing map (SOM) is trained on a pooled subsample of every sample's gated lymphocytes,
saved, and each sample is then mapped onto it in its own step.

Why our own implementation: the `flowsom` package (PyPI) pulls scanpy, anndata, numba, umap,
matplotlib, statsmodels, zarr and more (about 30 packages) into an environment that needs none of
them. What FlowSOM does is small and fits NumPy well:

- settings: config/clustering.yaml over defaults, and the annotation rules
- som: the batch SOM
- metaclustering: FlowSOM's ConsensusClusterPlus step (k configured or picked by PAC)
- common_scale: samples pooled on one common logicle, not on each file's own (T = $PnR)
- sample_events: one sample's gated events, read for clustering
- annotation: each metacluster's median expression read against the rules
- model: the trained model and its file; training: fitting it on the cohort
- mapping: one sample mapped onto the model, and its agreement (F1) with the gates

Files: `cytopipe cluster-train` writes the model (NPZ: codes, metaclusters, medians, annotation
and a JSON record of settings and training); `cytopipe cluster-map` writes one sample's
clusters.json, the format the report's "Clustering" section reads.
"""
