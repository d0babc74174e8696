"""Find the images under SRC folders, and the split and class of each, from folder and file names.

Supported layouts (docs/DATA_FORMAT.md has examples):

- class folders          SRC/<class>/**/<image>                      all train
- split folders          SRC/{train,val,test}/<class>/**/<image>     val and test -> test
- split+class folders    SRC/{train,val,test}_<class>/**/<image>
- flat folder            SRC/<image>, labeled by --label CLASS=REGEX rules, else unlabeled
- flat split folders     SRC/{train,val,test}/<image>, labeled like a flat folder

Class names are the folder (or rule) names, sorted; nothing is hard-coded.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lens.data.h5file import SPLITS, TEST, TRAIN, UNLABELED
from lens.data.problems import Problems
from lens.errors import LensError

IMAGE_SUFFIXES = (".npy", ".png", ".jpg", ".jpeg")
SPLIT_NAMES = {"train": TRAIN, "val": TEST, "valid": TEST, "validation": TEST, "test": TEST}
SPLIT_CLASS = re.compile(r"^(train|val|valid|validation|test)[_-](.+)$", re.IGNORECASE)


@dataclass(frozen=True)
class LabelRules:
    """``--label CLASS=REGEX`` rules for flat folders: the first rule whose regex is found
    in the file name wins; files matching none get ``default`` (or are an error)."""

    rules: tuple[tuple[str, str], ...]
    default: str | None = None
    _compiled: tuple[tuple[str, re.Pattern[str]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        compiled = []
        for cls, pattern in self.rules:
            if not cls:
                raise LensError(f"--label ={pattern}: the class name is empty")
            try:
                compiled.append((cls, re.compile(pattern)))
            except re.error as exc:
                raise LensError(f"--label {cls}={pattern}: not a valid regex ({exc})") from None
        if self.default == "":
            raise LensError("--default-label: the class name is empty")
        object.__setattr__(self, "_compiled", tuple(compiled))

    @classmethod
    def parse(cls, specs: Sequence[str], default: str | None = None) -> LabelRules:
        rules = []
        for spec in specs:
            name, sep, pattern = spec.partition("=")
            if not sep or not pattern:
                raise LensError(f"--label {spec!r}: expected CLASS=REGEX, e.g. nonlens='^nl_'")
            rules.append((name, pattern))
        return cls(tuple(rules), default)

    @property
    def classes(self) -> tuple[str, ...]:
        names = [c for c, _ in self.rules] + ([self.default] if self.default else [])
        return tuple(dict.fromkeys(names))

    def classify(self, filename: str) -> str | None:
        for cls, regex in self._compiled:
            if regex.search(filename):
                return cls
        return self.default


@dataclass(frozen=True, slots=True)
class Entry:
    path: str  # the file, as SRC joined with its relative path (what messages show)
    source: str  # what /source stores: relative to SRC, prefixed when there are several
    split: int  # TRAIN or TEST
    class_name: str | None  # None: unlabeled


@dataclass(frozen=True)
class Discovery:
    entries: tuple[Entry, ...]  # sorted by source
    class_names: tuple[str, ...]  # sorted
    layouts: tuple[str, ...]  # one line per SRC, for the summary
    skipped: tuple[str, ...]  # files under SRC that are not images

    def labels(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array(
            [UNLABELED if e.class_name is None else index[e.class_name] for e in self.entries],
            dtype=np.int64,
        )

    def splits(self) -> np.ndarray:
        return np.array([e.split for e in self.entries], dtype=np.int8)


def discover(srcs: Sequence[str | os.PathLike[str]], rules: LabelRules | None = None) -> Discovery:
    """Every image under the SRC folders with its split and class; LensError lists all problems."""
    problems = Problems()
    roots = _roots([Path(s) for s in srcs], problems)
    problems.raise_if_any()
    scan = _Scan(rules, problems)
    layouts = []
    for root, prefix in roots:
        layouts.append(f"{root}: {scan.root(root, prefix)}")
    _check_classes(scan, rules, problems)
    problems.raise_if_any()
    entries = tuple(sorted(scan.entries, key=lambda e: e.source))
    names = sorted({e.class_name for e in entries if e.class_name is not None})
    return Discovery(entries, tuple(names), tuple(layouts), tuple(scan.skipped))


def _roots(srcs: list[Path], problems: Problems) -> list[tuple[Path, str]]:
    """(SRC, source prefix) pairs. Several SRCs are prefixed by their path relative to their
    common parent folder, which keeps sources unique and readable (shard_000/train/no/1.npy)."""
    if not srcs:
        raise LensError("no SRC folder given")
    resolved = []
    for src in srcs:
        if not src.exists():
            problems.add("SRC not found", str(src))
        elif not src.is_dir():
            problems.add("SRC is not a folder", str(src))
        resolved.append(src.resolve())
    if problems:
        return []
    for i, a in enumerate(resolved):
        for j, b in enumerate(resolved):
            if i < j and a == b:
                problems.add("SRC given twice", f"{srcs[i]} and {srcs[j]}")
            elif i != j and a != b and a.is_relative_to(b):
                problems.add("SRC inside another SRC", f"{srcs[i]} is inside {srcs[j]}")
    if len(srcs) == 1 or problems:
        return [(srcs[0], "")] if len(srcs) == 1 else []
    common = Path(os.path.commonpath(resolved))
    return [
        (s, r.relative_to(common).as_posix() + "/") for s, r in zip(srcs, resolved, strict=True)
    ]


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _listdir(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(subfolders, image files, other files) in ``folder``, sorted, hidden ones left out."""
    dirs, images, others = [], [], []
    with os.scandir(folder) as it:
        for e in it:
            if not _visible(e.name):
                continue
            if e.is_dir():
                dirs.append(e.name)
            elif _is_image(e.name):
                images.append(e.name)
            else:
                others.append(e.name)
    return sorted(dirs), sorted(images), sorted(others)


class _Scan:
    """Walks SRC folders, accumulating entries, skipped files and problems."""

    def __init__(self, rules: LabelRules | None, problems: Problems) -> None:
        self.rules = rules
        self.problems = problems
        self.entries: list[Entry] = []
        self.skipped: list[str] = []
        self.flat_labeled = 0  # flat folders labeled by the rules

    def root(self, root: Path, prefix: str) -> str:
        """Scan one SRC; return a description of its layout."""
        dirs, images, others = _listdir(root)
        self.skipped += [str(root / name) for name in others]
        if dirs and images:
            self.problems.add(
                "folder mixes image files and subfolders (expected one layout)", str(root)
            )
            return "mixed"
        if images:
            return self._flat(root, root, prefix, TRAIN, images)
        if not dirs:
            self.problems.add("no images", str(root))
            return "empty"
        splits = [d for d in dirs if d.lower() in SPLIT_NAMES]
        split_class = [d for d in dirs if SPLIT_CLASS.match(d)]
        if len(splits) == len(dirs):
            parts = []
            for d in dirs:
                kind = self._split_folder(root, prefix, d)
                parts.append(f"{d} ({SPLITS[SPLIT_NAMES[d.lower()]]}, {kind})")
            return "split folders " + ", ".join(parts)
        if len(split_class) == len(dirs):
            for d in dirs:
                m = SPLIT_CLASS.match(d)
                assert m is not None
                self._class_folder(root, prefix, d, SPLIT_NAMES[m.group(1).lower()], m.group(2))
            return "split+class folders " + ", ".join(dirs)
        if splits or split_class:
            marked = splits or split_class
            rest = [d for d in dirs if d not in marked]
            self.problems.add(
                "folder mixes split folders with other folders (expected one layout)",
                f"{root}: {', '.join(marked)} next to {', '.join(rest)}",
            )
            return "mixed"
        for d in dirs:
            self._class_folder(root, prefix, d, TRAIN, d)
        return "class folders " + ", ".join(dirs)

    def _split_folder(self, root: Path, prefix: str, name: str) -> str:
        folder = root / name
        split = SPLIT_NAMES[name.lower()]
        dirs, images, others = _listdir(folder)
        self.skipped += [str(folder / o) for o in others]
        if dirs and images:
            self.problems.add(
                "folder mixes image files and subfolders (expected one layout)", str(folder)
            )
            return "mixed"
        if images:
            return self._flat(root, folder, prefix, split, images)
        if not dirs:
            self.problems.add("no images", str(folder))
            return "empty"
        for d in dirs:
            self._class_folder(root, prefix, f"{name}/{d}", split, d)
        return "class folders"

    def _class_folder(self, root: Path, prefix: str, rel: str, split: int, cls: str) -> None:
        folder = root / rel
        base = str(root)
        found = 0
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if _visible(d))
            sub = Path(dirpath).relative_to(root).as_posix()
            for name in sorted(filenames):
                if not _visible(name):
                    continue
                if not _is_image(name):
                    self.skipped.append(str(Path(dirpath) / name))
                    continue
                path = posixpath.join(sub, name)
                self.entries.append(Entry(_join(base, path), prefix + path, split, cls))
                found += 1
        if not found:
            self.problems.add("empty class folder (no .npy, .png or .jpg images)", str(folder))

    def _flat(self, root: Path, folder: Path, prefix: str, split: int, images: list[str]) -> str:
        sub = folder.relative_to(root).as_posix()
        rules = self.rules
        if rules is not None:
            self.flat_labeled += 1
        for name in images:
            cls = rules.classify(name) if rules is not None else None
            if rules is not None and cls is None:
                self.problems.add(
                    "file matches no --label rule (add a rule or --default-label)",
                    str(folder / name),
                )
            path = name if sub == "." else f"{sub}/{name}"
            self.entries.append(Entry(str(folder / name), prefix + path, split, cls))
        return "flat, labeled by --label rules" if rules is not None else "flat, unlabeled"


def _join(base: str, rel: str) -> str:
    """``str(Path(base) / rel)`` for a relative POSIX ``rel``, without pathlib's per-call cost
    (it shows in discovery of a million files)."""
    if base == ".":
        return rel
    return base + rel if base.endswith("/") else f"{base}/{rel}"


def _check_classes(scan: _Scan, rules: LabelRules | None, problems: Problems) -> None:
    if rules is not None and (rules.rules or rules.default):
        if scan.flat_labeled == 0:
            problems.add(
                "--label/--default-label given but no SRC (or split folder) is a flat folder",
                "the rules label files directly inside a folder; class folders name the class",
            )
        else:
            counts: dict[str, int] = {}
            for e in scan.entries:
                if e.class_name is not None:
                    counts[e.class_name] = counts.get(e.class_name, 0) + 1
            for cls in rules.classes:
                if not counts.get(cls):
                    problems.add("empty class: no file matched its --label rule", cls)
    labeled = {e.class_name for e in scan.entries if e.class_name is not None}
    if len(labeled) == 1:
        problems.add(
            "only one class in a labeled set (a classifier needs two or more)",
            f"{labeled.pop()}; to pack unlabeled images, point SRC at a flat folder of images",
        )
