"""The bundled tiny text-to-image model."""
