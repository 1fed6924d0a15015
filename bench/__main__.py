"""python -m bench [--no-write] [--list] [name ...]: run benchmarks, print them, update docs/benchmarks.md.

Exit status: 0 when every benchmark that ran passed (or had no target), 1 when one failed or crashed,
2 for an unknown name.
"""

import argparse
import importlib
import pkgutil
import signal
import sys
import time
import traceback
from pathlib import Path

from bench import report

NOT_BENCHMARKS = {"report"}


def available() -> list[str]:
    package_dir = Path(__file__).resolve().parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(package_dir)])
        if not m.name.startswith("_") and m.name not in NOT_BENCHMARKS
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that benchmarks remove their temporary files and stop their servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    names = available()
    if args.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}")
    selected = args.names or names

    blocks, failed = {}, []
    for name in selected:
        started = time.monotonic()
        print(f"\n### bench {name} ...", flush=True)
        try:
            result = importlib.import_module(f"bench.{name}").run()
        except report.Skipped as skip:
            print(f"skipped {name}: {skip} (its block in {report.DOC_PATH.name} is kept)")
            continue
        except Exception:
            traceback.print_exc()
            print(f"FAILED {name}: crashed (its block in {report.DOC_PATH.name} is kept)")
            failed.append(name)
            continue
        sections = result if isinstance(result, list) else [result]
        for section in sections:
            report.print_section(name, section)
        print(f"({name}: {time.monotonic() - started:.0f} s)")
        failed += [name] if any(s.passed is False for s in sections) else []
        blocks[name] = report.markdown_block(name, sections, command=report.reproduce_command([name]))

    if blocks and not args.no_write:
        report.write_markdown(blocks, order=names)
        print(f"\nwrote {report.DOC_PATH} ({', '.join(blocks)})")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
