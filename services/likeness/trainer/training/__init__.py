"""The training domain: config-driven DreamBooth loop, LoRA, prior preservation, checkpoints and export.

No gRPC and no job bookkeeping here; `likeness.trainer.jobs` and `likeness.trainer.worker` drive it.
"""
