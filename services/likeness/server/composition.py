"""The composition root: which component serves each service, built from settings. The CLI, the embedded server
and the tests all assemble servers through here."""

from __future__ import annotations

import importlib

from likeness.server.component import ServiceComponent
from likeness.server.settings import Settings

#: Service name -> "module:factory" building its component from settings. Imported lazily so `serve gallery`
#: does not pay for torch and diffusers.
COMPONENT_FACTORIES = {
    "trainer": "likeness.trainer.service:TrainerComponent",
    "inference": "likeness.inference.service:InferenceComponent",
    "gallery": "likeness.gallery.service:GalleryComponent",
}


def build_components(names: list[str], settings: Settings) -> list[ServiceComponent]:
    components = []
    for name in names:
        module_name, factory = COMPONENT_FACTORIES[name].split(":")
        components.append(getattr(importlib.import_module(module_name), factory)(settings))
    return components
