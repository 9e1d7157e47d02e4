"""Check a custom dataset folder (docs/custom_datasets.md) as training and evaluation do
before they start, and print what it holds: images per split, the classes with their pixel
share and the number of images they occur in, the classes never present, then every problem
with its files. Exits with status 1 when there is a problem.

    python tools/check_dataset.py datasets/custom/shapes [--splits train val] [--workers N]

(also ``python -m sed.tools.check_dataset``).
"""
import argparse
import sys
from typing import Optional, Sequence

from tabulate import tabulate

from sed.data.custom import check_dataset
from sed.tools import cli


def summary(report) -> str:
    """The tables of a report: splits, then classes with their share of labelled pixels per split."""
    lines = [f"Dataset {report.folder}: {len(report.vocabulary or ())} classes, ignore label {report.ignore_label}"]
    if report.splits:
        lines.append(tabulate([[name, s.kind, s.images, s.ignored_pixels] for name, s in report.splits.items()],
                              headers=["split", "ground truth", "images", "unlabelled pixels"], tablefmt="pipe"))
    if report.vocabulary and report.splits:
        kinds = any(report.vocabulary.isthing)  # thing / stuff column
        headers = ["class"] + ["kind"] * kinds
        for name in report.splits:
            headers += [f"{name} pixels %", f"{name} images"]
        rows = []
        for i, (class_name, isthing) in enumerate(zip(report.vocabulary.names, report.vocabulary.isthing)):
            row = [class_name] + [("thing" if isthing else "stuff")] * kinds
            for stats in report.splits.values():
                total = sum(stats.pixels) or 1
                row += [100.0 * stats.pixels[i] / total, stats.images_with[i]]
            rows.append(row)
        lines.append(tabulate(rows, headers=headers, floatfmt=".2f", tablefmt="pipe"))
        for name, stats in report.splits.items():
            absent = [n for n, count in zip(report.vocabulary.names, stats.pixels) if count == 0]
            lines.append(f"Classes never present in {name}: {', '.join(absent) if absent else 'none'}")
    return "\n\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("folder", help="the dataset folder (holding classes.json and the split folders)")
    parser.add_argument("--splits", nargs="+", help="splits to check (default: every folder with images/)")
    parser.add_argument("--workers", type=cli.non_negative_int, default=0,
                        help="reading threads (default, or 0: one per core)")
    return cli.run_cli(parser, check, argv)


def check(args: argparse.Namespace) -> int:
    """Check the dataset and print its summary and problems; 1 if there are problems."""
    report = check_dataset(args.folder, args.splits, workers=args.workers)
    print(summary(report))
    if report.problems:
        print(f"\n{len(report.problems)} problem(s):", *report.problems, sep="\n  - ")
        return 1
    print("\nNo problem found.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
