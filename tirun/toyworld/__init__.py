"""The toy world: a renderer with known attributes, concepts to invert, an oracle, a toy model.

Modules: ``render`` (images, captions, editing scenes), ``world`` (what pretraining sees and
is kept from), ``concepts`` (ToyBench's concepts with ground truth and their split), ``oracle``
(attribute classifier), ``tokenizer`` (small CLIP-format tokenizers), ``pretrain`` (``python -m
tirun.toyworld.pretrain``; the model's shapes are configs in ``tirun/assets/arch/toy``).
"""
