"""Provenance for outgoing images: an invisible watermark and a signed C2PA manifest."""
