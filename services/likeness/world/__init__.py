"""A synthetic captioned world, a toy base model pretrained on it, and DreamBooth's evaluation on top.

- `scenes`: procedurally drawn 32 px pictures (5 classes x 5 contexts, colours, patterns) with captions.
- `base_model`, `pretrain`: the toy SD 1.x base model (`toy-sd15`) and the command that trains it.
- `judge`: a small CNN that recognises class, context and colour and embeds object identity.
- `subjects`: unique evaluation subjects, their photos, DreamBench-style prompts, the demo's subject.
- `metrics`, `evaluation`, `runner`: subject fidelity, prompt fidelity, language drift, personalization score,
  measured through the services (`service_backend`) or in process (`in_process`).

See docs/personalization.md.
"""
