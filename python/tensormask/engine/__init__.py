"""Everything around the model that touches files and tools: checkpoint conversion
(:mod:`tensormask.engine.convert`), and later training/evaluation loops."""
