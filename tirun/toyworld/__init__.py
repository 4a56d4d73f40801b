"""The toy world: a renderer with known attributes, concepts to invert, an oracle, a toy model.

Modules: ``render`` (images, captions, editing scenes), ``world`` (what pretraining sees and
is kept from), ``concepts`` (ready datasets with ground truth), ``oracle`` (attribute
classifier), ``arch`` (the toy model's shapes), ``pretrain`` (``python -m
tirun.toyworld.pretrain``).
"""
