"""The jobs: ``train`` (the training loop), ``evaluate`` (a split through the Predictor),
``predict`` (image files and dataset splits into prediction files)."""
