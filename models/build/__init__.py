"""What prepares models for the ml-api: the Hugging Face hub, ONNX export, int8 quantization and
the import into the BentoML model store. Used by `ragctl models ...`, tests and benchmarks; the
ml-api never imports it (it may import `models.runtime`, never the other way round)."""
