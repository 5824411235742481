"""bridgeseg: semantic and proposal-free instance segmentation after Wu, Shen and van den Hengel (2016).

Where things happen: ``engine/`` runs the jobs (train, evaluate, predict), ``predictor`` is the one
path from an image to its class map and instances, ``config`` holds every setting, ``models/``,
``data/``, ``grouping``, ``targets``, ``losses`` and ``evaluation/`` are the method's parts, and
``outputs`` writes every file format. The README's "Layout" section lists each module.
"""
