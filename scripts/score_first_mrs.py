"""Score the first N MRs of a committed E2E outputs.tsv with `superlora score` (same scorer, fewer MRs).

    python scripts/score_first_mrs.py results/study-oneseed/arms/all/outputs.tsv 100 [--data ../shared/data/e2e]

Used for results/qlora/: a 100-MR evaluation compared with an arm that was scored on all 630.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

from superlora.cli import main as superlora


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs")
    parser.add_argument("count", type=int)
    parser.add_argument("--data", default="../shared/data/e2e")
    args = parser.parse_args()
    with open(Path(args.data) / "original" / "testset_w_refs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    first = set(list(dict.fromkeys(r["mr"] for r in rows))[: args.count])
    lines = Path(args.outputs).read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        refs, hyps = Path(tmp) / "refs.csv", Path(tmp) / "outputs.tsv"
        with open(refs, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["mr", "ref"])
            writer.writerows([r["mr"], r["ref"]] for r in rows if r["mr"] in first)
        hyps.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.split("\t")[0] in first)]) + "\n")
        return superlora(["score", str(refs), str(hyps)])


if __name__ == "__main__":
    raise SystemExit(main())
