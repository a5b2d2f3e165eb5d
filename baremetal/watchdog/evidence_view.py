"""`baremetal events --show N`: an evidence folder for people (each file under a heading) or as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from baremetal.errors import UsageError
from baremetal.watchdog.evidence import evidence_dir, folders

ORDER = ("summary.json", "stacks.txt", "nvml.txt", "metrics.txt", "log-tail.txt", "probes.json")


def find(root: Path, which: str, program: str | None = None) -> Path:
    """The folder `which` names: N (1 = newest, of `program` if given) or a folder name or path."""
    found = [f for f in folders(root) if program is None or _program_of(f) == program]
    if which.isdigit():
        number = int(which)
        if not found:
            raise UsageError(f"no evidence folders yet in {evidence_dir(root)}"
                             + (f" for {program}" if program else ""))
        if not 1 <= number <= len(found):
            raise UsageError(f"--show {number}: there are {len(found)} evidence folder(s); 1 is the newest")
        return found[-number]
    candidate = Path(which)
    for path in (candidate, evidence_dir(root) / candidate.name):
        if path.is_dir() and path.resolve().parent == evidence_dir(root).resolve():
            return path
    names = ", ".join(f.name for f in found[-5:]) or "none"
    raise UsageError(f"--show {which}: no such evidence folder in {evidence_dir(root)} (newest: {names})")


def _program_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("program")
    except (OSError, ValueError, AttributeError):
        return None


def _files(folder: Path) -> list[Path]:
    present = [folder / name for name in ORDER if (folder / name).is_file()]
    extra = sorted(p for p in folder.rglob("*") if p.is_file() and p not in present)
    return present + extra


def show_evidence(root: Path, which: str, program: str | None, as_json: bool) -> str:
    """The text to print for `--show`."""
    folder = find(root, which, program)
    files = _files(folder)
    if as_json:
        document = {"folder": str(folder)}
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            key = str(path.relative_to(folder))
            try:
                document[key] = json.loads(text) if path.suffix == ".json" else text
            except ValueError:
                document[key] = text
        return json.dumps(document, indent=2, default=str) + "\n"
    parts = [f"Evidence folder {folder}\n"]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(f"\n----- {path.relative_to(folder)} -----\n{text if text.endswith(chr(10)) else text + chr(10)}")
    return "".join(parts)
