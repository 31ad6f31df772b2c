"""Stage 2: one audio message to one contact over HTTP, with every answer classified honestly."""
