"""Sample-quality metrics without downloads: Sinkhorn and MMD (``distances``), FID and KID (``fid``) in the
feature space of the project's own classifiers (``classifier``), and all of them at once
(``evaluate.evaluate_samples``)."""
