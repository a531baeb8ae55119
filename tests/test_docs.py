"""The documentation site: it builds strictly, its generated API page names every public function,
its runnable examples run, and no module cites a file that is not in the repository.

Code blocks: every ```python block of docs/**/*.md and README.md runs, page by page in one namespace
(as a reader would paste them in order), from the repository root. A block meant only to be read
has the line ``<!-- not run: reason -->`` right before its fence. A runner of our own (about 20
lines) rather than pytest-examples or mktestdocs: it needs no extra dependency and knows that marker.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"(<!-- not run: [^>]+-->\n)?```python\n(.*?)\n```", flags=re.S)


def python_blocks(page: Path):
    return [(skip is not None and skip != "", code) for skip, code in FENCE.findall(page.read_text())]


def test_the_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    api = (site / "reference" / "api.html").read_text()
    import dncsim
    for name in dncsim.__all__:
        if name != "__version__":
            assert re.search(rf'id="[\w.]*\b{name}"', api), f"{name} has no entry on the Python API page"
    config = (site / "reference" / "configuration.html").read_text()
    assert "scenario.source.image_size" in config and "cluster.walltime" in config
    assert (site / "index.html").is_file() and (site / "getting-started" / "quickstart.html").is_file()


RUNNABLE = [(page, [code for skip, code in python_blocks(page) if not skip])
            for page in PAGES if any(not skip for skip, _ in python_blocks(page))]


def test_there_are_runnable_examples():
    assert sum(len(blocks) for _, blocks in RUNNABLE) >= 4


@pytest.mark.parametrize("page,blocks", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p, _ in RUNNABLE])
def test_the_examples_of_a_page_run(page, blocks, monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "__docs__"}
    for code in blocks:
        exec(compile(code, str(page), "exec"), namespace)


def test_no_module_cites_a_file_missing_from_the_repository():
    """Every ``*.md`` any module names, and every ``*.py`` the package and tools name, exists here
    (outputs that runs and studies write aside)."""
    outputs = {"report.md", "study.md"}          # files that runs and studies write
    present = {p.name for p in ROOT.rglob("*") if not {".venv", ".git", "build"} & set(p.relative_to(ROOT).parts)}
    missing = []
    for path in ROOT.glob("*/**/*.py"):
        rel = path.relative_to(ROOT)
        if {".venv", "build", "docs"} & set(rel.parts):
            continue
        pattern = r"[A-Za-z0-9_./-]*[A-Za-z0-9_]\.md\b" if rel.parts[0] == "tests" else \
            r"[A-Za-z0-9_./-]*[A-Za-z0-9_]\.(?:md|py)\b"
        for match in re.finditer(pattern, path.read_text()):
            name = Path(match.group(0)).name
            if name not in outputs and name not in present:
                missing.append(f"{rel}: {match.group(0)}")
    assert not missing, f"modules citing files not in the repository: {missing}"
