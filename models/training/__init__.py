"""Training and evaluation (needs the ``torch`` and ``train`` extras).

- :mod:`.data`: loaders for the ESC-50 CSV layout, a folder per class and DCASE strong-label TSVs;
- :mod:`.synth`: a soundscape synthesiser with tight strong labels;
- :mod:`.augment`: crops, gain, shift, mixup, SpecAugment and background noise on log-mel features;
- :mod:`.loop`: the trainer (``aed train``);
- :mod:`.evaluate` and :mod:`.events`: clip-level and event-level evaluation (``aed evaluate``).
"""
