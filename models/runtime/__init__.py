"""What the ml-api loads: settings, devices, ONNX Runtime sessions, the embedder and reranker
runtimes, and read-only access to the BentoML model store. Imports nothing from `models.build`
(tests/test_import_graph.py checks it), so the bento ships this package alone."""
