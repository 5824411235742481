"""Datasets: the formats (``voc``, ``sbd``, ``cityscapes``, ``context``), the registry of their names,
augmentation, ``data check``, the synthetic demo scenes, and (``loading``) datasets and loaders
from a ``data:`` config section."""
