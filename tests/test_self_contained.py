"""A fresh clone passes its own tests: nothing under tests/ or bench/ reaches outside the checkout.

A user's clone has no folder beside it (the project's design and vectors came from one named
``shared`` one level up); a test that reads it fails at collection there and passes here, which is
the worst kind of test.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Any spelling of "the folder beside the checkout": ../ + shared, parents[2] and up (one above the
# repository from tests/x.py), ROOT.parent, or an absolute /work path. Built from pieces so that this
# file does not name what it looks for.
_BESIDE = "shared"
OUTSIDE = re.compile(
    r"\.\./" + _BESIDE + r"|/" + _BESIDE + r"/vectors|parents\[[2-9]\]|ROOT\.parent\b|['\"]/work/"
)


def test_no_test_or_bench_reads_outside_the_checkout() -> None:
    offenders = []
    for folder in ("tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_the_age_vectors_are_inside_the_project() -> None:
    vectors = ROOT / "tests" / "vectors" / "age"
    assert len(list((vectors / "testdata").iterdir())) == 143
    readme = (vectors / "README.md").read_text(encoding="utf-8")
    assert "C2SP/CCTV" in readme and "1e3d2860d46e94e777e1b17c7a6f2436387e3ecc" in readme
    assert "0BSD" in readme or "Zero-Clause BSD" in readme
