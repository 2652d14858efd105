"""``python -m tests.soak --profile smoke|full --seed N [--out DIR]``: run the soak, print the verdict.

Exits 0 when every guarantee held, 1 on any violation (the bundle in --out
then holds the seed, verdict, process logs and database/stream snapshots).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ._profile import PROFILES
from ._run import run, verdict_json


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the soak, print the verdict."""
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="bundle directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix=f"outboxkit-soak-{args.profile}-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"soak: profile={args.profile} seed={args.seed} bundle={out}", flush=True)
    verdict = run(PROFILES[args.profile], args.seed, out)
    print(json.dumps(verdict_json(verdict), indent=2))
    print("soak: OK" if verdict.ok else f"soak: FAILED: {'; '.join(verdict.violations)}", flush=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
