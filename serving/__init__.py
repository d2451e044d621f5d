"""The BentoML service (`serving.service`), its settings and the model-store import (`serving.store`)."""
