"""Benchmarks: commands that measure and report, not timed tests.

``python -m bench`` runs every module of this package that defines ``run()``; ``python -m bench NAME ...``
runs some. A module's ``run()`` returns a ``bench.report.Section`` (or a list of them), or raises
``bench.report.Skipped`` when it cannot run on this machine. Results are printed and written to
``docs/benchmarks.md`` (see ``bench.report``).
"""
