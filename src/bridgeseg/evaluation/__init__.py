"""Metrics: pixel accuracy / mean accuracy / mean IoU (``semantic``), mAP^r (``instance``), and the
scorers of prediction files (``score semantic``, ``score instance``)."""
