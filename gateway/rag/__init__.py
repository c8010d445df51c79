"""The knowledge base: the plant's documents, searchable by meaning and by exact codes.

This room owns reading documents (loaders.py, documents.py, html_loader.py), cutting them into
chunks (chunking.py), ingesting them (ingest.py), the SQLite file (store.py with schema.py,
vector_index.py, keywords.py, fusion.py), the embedding model (embedding_model.py, embedder.py),
backups (backup.py), calibration (calibrate.py) and the live, swappable handle the running
gateway searches through (live.py, opening.py, search.py). It may import models and the
foundation (configuration, errors, logging, the I/O executor, the bundled models).
"""
