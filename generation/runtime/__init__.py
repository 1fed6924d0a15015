"""The GPU worker's model runtime: base pipelines, LoRA file cache, adapter application, generation, encoding.

Plain Python with no Django or Celery imports, so it can be tested and benchmarked on its own; the Celery task
wires it to the database and storage. Import the submodules directly (importing this package loads no torch).
"""
