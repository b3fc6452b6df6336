"""Base models: the CLIP tokenizer, tiny test pipelines, safe loading and the base model catalog.

Import the submodules (`tokenizer`, `tiny`, `loading`, `single_file`, `catalog`); this package itself imports
nothing heavy so that `import likeness.models.tokenizer` does not pay for diffusers.
"""
