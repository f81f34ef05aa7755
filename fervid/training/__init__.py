"""Training: the config, the loop and what it is made of (PyTorch).

``config`` (torch-free) holds every setting; ``engine`` runs the loop over ``augment``,
``optim``, ``weight_averaging`` (EMA, SWA) and ``distill``; ``checkpoint`` writes models and
resumable state; ``carry`` packs a run to continue elsewhere.
"""
