"""Build the offline install bundle: every wheel the project needs beyond PyTorch, for one
Python version and platform, with a manifest. `bash tools/install.sh --bundle DIR` runs it.

    python tools/bundle.py DIR [--python-version 3.12] [--platform TAG ...] [--full]

The bundle holds the distributions of requirements.txt and requirements-nodeps.txt and,
walking their wheels' declared dependencies for the target Python, everything those need, at
the versions installed in the running environment (those the test suite ran with) where it has
them. Left out: torch, torchvision and all they depend on (numpy, Pillow, the CUDA libraries:
the target interpreter has them), and, unless --full, OpenCV, TensorBoard and matplotlib (see
LEFT_OUT_UNLESS_FULL): without them the install imports, runs inference and the benchmarks and
passes the fixture tests; training and pictures need them. Source-only distributions are built
here into wheels, which must come out pure Python. setuptools is always in: it builds the
project's own editable install. Writes DIR/manifest.json (name, version, file, sha256 and size
of each wheel, the target, what was left out) and, but with --full, stops if the wheels exceed
64 MiB (the most a GPU machine of ours takes along).
"""
import argparse
import email.parser
import hashlib
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20
PROVIDED_BY_TARGET = ("torch", "torchvision")  # with everything they depend on
# Left out unless --full (with what only they need): about 94 MiB together, all on most GPU images,
# and what they serve needs OpenCV, the largest (58 MiB), in any case.
LEFT_OUT_UNLESS_FULL = {
    "opencv-python-headless": "training's data augmentation, the demo, overlays and the synthetic datasets",
    "tensorboard": "training's TensorBoard log (train_net.py)",
    "matplotlib": "the demo's and overlays' pictures (detectron2's Visualizer), benchmark plots",
}
BUILD_BACKEND = "setuptools"  # always bundled: installing the project builds it (pip --find-links DIR)
CUDA_ONLY = ("nvidia-", "cuda-", "triton")  # in the closure of torch's CUDA builds only
DETECTRON2 = "sal-detectron2"  # pure Python, but its only wheel is tagged cp310: retagged
# The oldest torch the bundle accepts; torchvision must be the release made for it.
MIN_TORCH = "2.4"
TORCHVISION_MINOR_OFFSET = 15  # torch 2.X pairs with torchvision 0.(X + 15)


def manylinux_platforms(machine: str) -> List[str]:
    """Platform tags pip should accept for ``machine``, newest glibc first (pip matches exactly)."""
    return [f"manylinux_2_{n}_{machine}" for n in range(39, 16, -1)] + [f"manylinux2014_{machine}",
                                                                         f"manylinux1_{machine}", "linux_" + machine]


def platform_machine(tag: str) -> str:
    """manylinux_2_28_x86_64, manylinux2014_x86_64, linux_x86_64 -> x86_64."""
    return tag.split("_", 3 if tag.startswith("manylinux_") else 1)[-1]


def marker_environment(python_version: str, machine: str) -> Dict[str, str]:
    """The PEP 508 marker variables of CPython ``python_version`` on Linux ``machine``."""
    return {"python_version": python_version, "python_full_version": python_version + ".0",
            "implementation_name": "cpython", "implementation_version": python_version + ".0",
            "platform_python_implementation": "CPython", "platform_machine": machine,
            "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix", "extra": ""}


def requirements(path: Path) -> List[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def applies(requirement: Requirement, environment: Dict[str, str]) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(environment)


def installed_closure(names: Iterable[str], environment: Dict[str, str]) -> set:
    """``names`` and every distribution they depend on, from the running environment's metadata."""
    todo, closure = [canonicalize_name(n) for n in names], set()
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [canonicalize_name(r.name) for r in map(Requirement, requires) if applies(r, environment)]
    return closure


def wheel_requirements(wheel: Path) -> List[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        metadata = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(z.read(metadata).decode())
    return [Requirement(r) for r in message.get_all("Requires-Dist") or []]


def pinned_spec(requirement: Requirement, installed: Dict[str, str]) -> str:
    """``requirement`` at the running environment's version where it has one that satisfies it."""
    version = installed.get(canonicalize_name(requirement.name))
    if version and requirement.specifier.contains(version, prereleases=True):
        return f"{requirement.name}=={version}"
    return f"{requirement.name}{requirement.specifier}"


def pip(*args: str):
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


class Bundler:
    """Downloads wheels for one target into ``out``, building source distributions here."""

    def __init__(self, out: Path, python_version: str, platforms: List[str]):
        self.out, self.python_version, self.platforms = out, python_version, platforms
        self.files: Dict[str, Path] = {}  # canonical name -> wheel

    def download(self, specs: List[str]):
        """Wheels of ``specs`` (no dependencies); a spec with no wheel for the target is built
        from its source distribution, which must give a pure-Python wheel."""
        with tempfile.TemporaryDirectory() as tmp:
            target = ["--python-version", self.python_version, "--implementation", "cp"]
            pip("download", "--no-deps", "--prefer-binary", *target,
                *[a for p in self.platforms for a in ("--platform", p)], "-d", tmp, *specs)
            for path in sorted(Path(tmp).iterdir()):
                if path.suffix == ".whl":
                    self._add(path, parse_wheel_filename(path.name)[0])
                    continue
                name, version = parse_sdist_filename(path.name)
                with tempfile.TemporaryDirectory() as wheel_dir:
                    pip("wheel", "--no-deps", "--no-build-isolation", "-w", wheel_dir, str(path))
                    (built,) = Path(wheel_dir).glob("*.whl")
                    built = built.replace(Path(tmp) / built.name)
                if not built.name.endswith("-none-any.whl"):
                    raise SystemExit(f"bundle: {name} {version} has no wheel for CPython {self.python_version} on "
                                     f"{self.platforms[0]} and its source builds {built.name}, not pure Python")
                self._add(built, name)

    def download_detectron2(self, spec: str):
        with tempfile.TemporaryDirectory() as tmp:
            pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.10", "-d", tmp, spec)
            (wheel,) = Path(tmp).glob("*-cp310-none-any.whl")
            self._add(wheel, DETECTRON2, wheel.name.replace("-cp310-none-any.whl", "-py3-none-any.whl"))

    def _add(self, path: Path, name: str, filename: str = ""):
        destination = self.out / (filename or path.name)
        path.replace(destination)
        self.files[canonicalize_name(name)] = destination


def build(out: Path, python_version: str, platforms: List[str], full: bool) -> dict:
    environment = marker_environment(python_version, platform_machine(platforms[0]))
    provided = installed_closure(PROVIDED_BY_TARGET, environment) - {BUILD_BACKEND}
    left_out = {} if full else dict(LEFT_OUT_UNLESS_FULL)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    bundler = Bundler(out, python_version, platforms)

    no_deps = requirements(ROOT / "requirements-nodeps.txt")
    for requirement in no_deps:
        if canonicalize_name(requirement.name) == DETECTRON2:
            bundler.download_detectron2(str(requirement))
    bundler.download([str(r) for r in no_deps if canonicalize_name(r.name) != DETECTRON2])

    seen = set(bundler.files) | provided | set(left_out)
    level = [r for r in requirements(ROOT / "requirements.txt") if canonicalize_name(r.name) not in seen]
    while level:  # one pip call per level of the dependency tree
        seen |= {canonicalize_name(r.name) for r in level}
        bundler.download([pinned_spec(r, installed) for r in level])
        needed = [r for name in sorted({canonicalize_name(r.name) for r in level})
                  for r in wheel_requirements(bundler.files[name]) if applies(r, environment)]
        level = list({canonicalize_name(r.name): r for r in needed if canonicalize_name(r.name) not in seen}.values())

    wheels = []
    for name, path in sorted(bundler.files.items()):
        data = path.read_bytes()
        wheels.append({"name": name, "version": str(parse_wheel_filename(path.name)[1]), "file": path.name,
                       "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    total = sum(w["bytes"] for w in wheels)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    manifest = {
        "python_version": python_version, "platforms": platforms, "built_from_commit": commit,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # what the target interpreter must have: torch >= torch_min, torchvision 0.(torch minor + offset)
        "torch_min": MIN_TORCH, "torchvision_minor_offset": TORCHVISION_MINOR_OFFSET,
        "target_also_has": sorted(n for n in provided - {"torch", "torchvision"} if not n.startswith(CUDA_ONLY)),
        "left_out": left_out, "total_bytes": total, "wheels": wheels,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if total > LIMIT_BYTES and not full:
        largest = ", ".join(f"{w['name']} {w['bytes'] / 2**20:.1f}" for w in sorted(wheels, key=lambda w: -w["bytes"])[:5])
        raise SystemExit(f"bundle: {total / 2**20:.1f} MiB of wheels, over the {LIMIT_BYTES // 2**20} MiB limit "
                         f"(largest, MiB: {largest})")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="bundle folder (its wheels are replaced)")
    parser.add_argument("--python-version", default="3.12", help="target CPython X.Y (default: 3.12)")
    parser.add_argument("--platform", action="append", default=[],
                        help="pip platform tag, repeatable (default: manylinux x86-64, glibc 2.17-2.39)")
    parser.add_argument("--full", action="store_true", help="also bundle " + " and ".join(LEFT_OUT_UNLESS_FULL))
    args = parser.parse_args(argv)
    manifest = build(args.out, args.python_version, args.platform or manylinux_platforms("x86_64"), args.full)
    print(f"[bundle] {len(manifest['wheels'])} wheels, {manifest['total_bytes'] / 2**20:.1f} MiB, for CPython "
          f"{args.python_version} on {manifest['platforms'][0]}: {args.out}/manifest.json")
    for name, why in manifest["left_out"].items():
        print(f"[bundle] left out {name} ({why}); --full adds it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
