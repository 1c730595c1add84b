#!/usr/bin/env python3
"""Checks the maps for staleness before a submission (scripts/test.sh runs it): every file a doc names in
backticks exists, docs/ARCHITECTURE.md stays a map (at most MAX_ARCHITECTURE_LINES lines), and every
BENCHMARKS.md section gives the command that produced its table."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_ARCHITECTURE_LINES = 320
DOCS = ["docs/ARCHITECTURE.md", "docs/OPERATIONS.md", "docs/INTEGRATION.md", "BENCHMARKS.md", "README.md"]
PATH = re.compile(r"`([A-Za-z0-9_.\-/]+\.(?:rs|md|toml|sql|py|sh|jsonl|mjs))`")
# The short forms of docs/ARCHITECTURE.md and docs/INTEGRATION.md (their opening paragraphs): `service/x.rs` is tenantry-service/src/x.rs, ...
SHORT = {
    "service/": "crates/tenantry-service/src/",
    "store/": "crates/tenantry-store/src/",
    "web/": "crates/tenantry-web/src/",
    "domain/": "crates/tenantry-domain/src/",
    "search/": "crates/tenantry-search/src/",
    "llm/": "crates/tenantry-llm/src/",
    "rag/": "crates/tenantry-rag/src/",
    "ingest/": "crates/tenantry-ingest/src/",
    "billing/": "crates/tenantry-billing/src/",
    "api/": "crates/tenantry-web/tests/api/",
}


def tracked_names():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return set(files), {Path(f).name for f in files}


def exists(path, files, names):
    if "/" not in path:
        return path in names
    candidates = [path, "crates/" + path, "docs/" + path]
    for short, full in SHORT.items():
        if path.startswith(short):
            candidates.append(full + path[len(short):])
    if path.startswith("../shared/"):
        return True  # outside the repository; read-only for the project
    return any(c in files or (ROOT / c).exists() for c in candidates)


def main():
    files, names = tracked_names()
    problems = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for n, line in enumerate(text.splitlines(), 1):
            for path in PATH.findall(line):
                if Path(path).stem == "x":
                    continue  # the short forms' legend
                if not exists(path, files, names):
                    problems.append(f"{doc}:{n}: names `{path}`, which does not exist")
    lines = len((ROOT / "docs/ARCHITECTURE.md").read_text().splitlines())
    if lines > MAX_ARCHITECTURE_LINES:
        problems.append(f"docs/ARCHITECTURE.md has {lines} lines; a map stays under {MAX_ARCHITECTURE_LINES}")
    sections = re.split(r"\n(?=## )", (ROOT / "BENCHMARKS.md").read_text())
    for section in sections[1:]:
        heading = section.splitlines()[0]
        if "```sh" not in section:
            problems.append(f"BENCHMARKS.md: {heading!r} gives no command (a ```sh block)")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"docs: {len(DOCS)} checked, ARCHITECTURE.md {lines} lines")


if __name__ == "__main__":
    main()
