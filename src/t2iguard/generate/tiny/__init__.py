"""The bundled tiny text-to-image model and its emoji world.

* :func:`load_tiny_pipeline` — the model as a diffusers ``StableDiffusionPipeline`` (CPU-fast).
* :mod:`.concepts` — the fifteen concepts (five stand-in unsafe ones), their policy categories and
  the concept classifier (:func:`~.concepts.load_concept_classifier`), the metric.
* :mod:`.world` — the deterministic captioned scene generator the model was trained on.
* :class:`~.generator.TinyGenerator` — the ``tiny`` backend of :func:`t2iguard.generate.factory.make_generator`.
"""

from t2iguard.generate.tiny import concepts, world
from t2iguard.generate.tiny.pipeline import load_tiny_pipeline

__all__ = ["concepts", "load_tiny_pipeline", "world"]
