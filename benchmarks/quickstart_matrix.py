"""A recipe (the quickstart by default) over seeds x thread counts x CPU instruction sets: does its gain
hold everywhere?

A result that holds on one machine setting only is not a result. Each cell is one whole
``k2rl train configs/quickstart.yaml seed=S`` process, run one at a time (so the wall time is the
cell's own), with ``OMP_NUM_THREADS`` set to the cell's thread count and, for ``avx2`` cells,
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``.

    python benchmarks/quickstart_matrix.py                       # seeds 0 1 2 x threads 1 2 x native avx2
    python benchmarks/quickstart_matrix.py --cells 0:2:native 0:2:avx2 0:1:native   # a subset
    python benchmarks/quickstart_matrix.py --seeds 3 --threads 2 --isa avx2 -- trainer.max_steps=50
    python benchmarks/quickstart_matrix.py --recipe configs/coding.yaml --threads 2   # the coding recipe

Prints before/after/delta/wall per cell, the minimum delta and the maximum wall, with the CPU's name
and instruction-set flags; the baseline of every delta is the same run's own pre-RL accuracy. A
recipe with ``eval.by`` also gets each group's solved share before -> after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def cpu_description() -> str:
    sys.path.insert(0, str(ROOT))
    from k2rl.run.environment import cpu_flags, cpu_name

    flags = cpu_flags()
    isa = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return f"{cpu_name()}, {os.cpu_count()} cores; flags: {' '.join(isa) or 'unknown'}"


def by_groups(summary: dict) -> dict[str, tuple[float, float]]:
    """``{group: (before, after)}`` solved shares of the headline metric per ``eval.by`` group."""
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    suffix = f"/{summary['metric']}/solved"
    return {key.split("=", 1)[1].removesuffix(suffix): (before.get(key, float("nan")), value)
            for key, value in sorted(after.items()) if "=" in key and key.endswith(suffix)}


def run_cell(recipe: Path, seed: int, threads: int, isa: str, out: Path, overrides: list[str]) -> dict:
    name = f"seed{seed}-t{threads}-{isa}"
    env = {key: value for key, value in os.environ.items() if key not in AVX2}
    env.update({"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", **(AVX2 if isa == "avx2" else {})})
    command = [sys.executable, "-m", "k2rl.cli", "train", str(recipe),
               f"seed={seed}", f"output_dir={out}", f"run_name={name}", *overrides]
    log = out / f"{name}.log"
    with log.open("w") as handle:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        return {"cell": name, "error": f"exit {code}, see {log}"}
    summary = json.loads((out / name / "summary.json").read_text())
    return {
        "cell": name,
        "before": summary["accuracy_before"],
        "after": summary["accuracy_after"],
        "delta": summary["delta_pts"],
        "wall": summary["wall_s"],
        "capability": summary["environment"]["cpu_capability"],
        "by": by_groups(summary),
    }


def parse_cells(args) -> list[tuple[int, int, str]]:
    if args.cells:
        cells = []
        for text in args.cells:
            seed, threads, isa = text.split(":")
            if isa not in ("native", "avx2"):
                raise SystemExit(f"quickstart_matrix: cell {text!r}: the ISA is native or avx2")
            cells.append((int(seed), int(threads), isa))
        return cells
    return list(itertools.product(args.seeds, args.threads, args.isa))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--isa", nargs="+", choices=["native", "avx2"], default=["native", "avx2"])
    parser.add_argument("--cells", nargs="+", help="explicit SEED:THREADS:ISA cells instead of the product")
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides passed to every run")
    args = parser.parse_args()
    cells = parse_cells(args)
    out = args.out or Path(tempfile.mkdtemp(prefix="k2rl-matrix-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_description()}")
    print(f"{len(cells)} cells, runs in {out}")
    print(f"{'cell':<22} {'ISA used':<9} {'before':>7} {'after':>7} {'delta':>8} {'wall':>7}")
    rows = []
    for seed, threads, isa in cells:
        row = run_cell(args.recipe.resolve(), seed, threads, isa, out, args.overrides)
        rows.append(row)
        if "error" in row:
            print(f"{row['cell']:<22} {row['error']}", flush=True)
            continue
        print(f"{row['cell']:<22} {row['capability']:<9} {row['before']:>7.3f} {row['after']:>7.3f} "
              f"{row['delta']:>+7.1f}p {row['wall']:>6.0f}s  "
              + "  ".join(f"{group} {b:.3f}->{a:.3f}" for group, (b, a) in row["by"].items()), flush=True)
    done = [row for row in rows if "error" not in row]
    if done:
        print(f"minimum delta {min(r['delta'] for r in done):+.1f} pts; maximum wall {max(r['wall'] for r in done):.0f} s; "
              f"{len(rows) - len(done)} failed")
    (out / "matrix.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
