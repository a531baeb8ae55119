"""Reports show data as text: a run whose task names (the columns of an image_table CSV), attribute
values, run name, study name and study run records are script and markup renders HTML in which none of
it is markup (parsed: no injected <script>, no on* handler, no <img src=x>; the payload is there as
text) and Markdown in which it is escaped (rendered by a CommonMark parser with raw HTML allowed, the
result holds the payload as text and nothing injected)."""
import json
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from dncsim.analysis.report import build_report
from dncsim.analysis.report.render import md_code, md_escape
from dncsim.analysis.report.study import build_study_report
from dncsim.analysis.study import write_study_products
from dncsim.rundir import load_run
from dncsim.simulator.study import StudyConfig
from tests.support.hostile import RUN_NAME, TASK_A, TASK_B, VALUES_A, VALUES_B, hostile_run

STUDY_NAME = "<img src=x onerror=alert(6)>"
STUDY_RUN = "<svg onload=alert(7)>"
STUDY_ERROR = "diverged: <script>alert(8)</script> | **loud**"
FACTOR_VALUE = "<img src=x onerror=alert(9)>"
NAMES = [TASK_A, TASK_B, RUN_NAME]


class Page(HTMLParser):
    """Every element (tag, attributes), the text of every <script>, and the text shown."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements, self.scripts, self.text, self._in_script = [], [], [], False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def assert_nothing_injected(html: str, shown=()):
    page = Page(html)
    assert [s for s in page.scripts if "alert" in s] == []
    handlers = [(tag, k, v) for tag, attrs in page.elements for k, v in attrs.items() if k.startswith("on")]
    assert handlers == []
    assert [a for tag, a in page.elements if tag == "img" and a.get("src") == "x"] == []
    assert [tag for tag, _ in page.elements if tag in ("b", "svg")] == []
    own = ("#", "data:text/csv;base64,", "measurements.csv")    # the report's contents and its CSV download
    assert [a for tag, a in page.elements if tag == "a" and not (a.get("href") or "").startswith(own)] == []
    text = "".join(page.text)
    for s in shown:                        # the payload is there, as text
        assert s in text, s
    return page


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return hostile_run(tmp_path_factory.mktemp("hostile") / "run")


@pytest.fixture(scope="module")
def report(hostile):
    return build_report(hostile, compare=[hostile])


def test_md_escape_and_code_spans_show_exactly_the_text():
    md = MarkdownIt("commonmark").enable("table")
    for s in [TASK_A, TASK_B, *VALUES_A, STUDY_ERROR, "a\\b", "~~s~~", "&lt;", "# h", "1. x"]:
        assert md.render(f"x {md_escape(s)}\n") == md.render(f"x {md_code(s)}\n").replace(
            "<code>", "").replace("</code>", "") != ""
        page = Page(md.render(f"| a |\n|---|\n| {md_escape(s)} |\n"))
        assert [t for t, _ in page.elements] == ["table", "thead", "tr", "th", "tbody", "tr", "td"]
        assert "".join(page.text).split("\n").count(s) == 1          # one cell, holding exactly s
    assert md_escape("a\nb\r\n|c") == "a b \\|c"
    assert md_code("a`b") == "``a`b``" and md_code("`x") == "`` `x ``"


def test_run_report_html_and_markdown_escape_every_name_and_value(hostile, report):
    html = (report / "index.html").read_text()
    for s in [TASK_A, RUN_NAME, *VALUES_A, *VALUES_B]:
        assert s not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    assert "&amp;amp;" in html                               # the literal "&amp;" of a task name, as text
    summary = json.loads((report / "summary.json").read_text())
    held = {v for e in summary["run"]["experience_inputs"] for vs in e["held"].values() for v in vs}
    assert len(held & set(VALUES_A)) == len(held & set(VALUES_B)) == 1      # each attribute's held value
    page = assert_nothing_injected(html, shown=[TASK_A, TASK_B, RUN_NAME, *held])
    assert [tag for tag, _ in page.elements].count("img") == len(summary["figures"])   # the figures alone
    title = html.split("<title>")[1].split("</title>")[0]
    assert title == "dncsim report: &lt;img src=x onerror=alert(2)&gt;"
    assert '<h2 id="compare">Comparison</h2>' in html

    md = (report / "report.md").read_text()
    for s in [TASK_A, RUN_NAME, TASK_B]:
        assert s not in md
    assert md.splitlines()[0] == "# dncsim report: \\<img src=x onerror=alert(2)\\>"
    assert "| \\<img src=x onerror=alert(1)\\> | \\*b\\*\\|\\`c\\`\\_\\[l\\](y) \\&amp; \\#h |" in md
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    page = assert_nothing_injected(rendered, shown=NAMES)
    assert {tag for tag, _ in page.elements} <= {"h1", "h2", "h3", "a", "p", "img", "table", "thead", "tbody", "tr",
                                                  "th", "td", "ul", "li", "em", "strong", "code"}


def test_every_markdown_table_row_has_its_header_width(report):
    """A '|' in a name would split a cell; escaped, every row of every table keeps the header's width."""
    md = (report / "report.md").read_text()
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 6
    cells = lambda line: len(line.replace("\\|", "").strip().strip("|").split("|"))  # noqa: E731
    for table in tables:
        assert {cells(line) for line in table} == {cells(table[0])}, table[0]


def test_study_report_escapes_the_study_run_names_errors_and_factors(hostile, tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    factors = {"training.epochs": 1, "strategy.name": FACTOR_VALUE}
    runs = [{"name": TASK_A, "factors": factors, "path": str(hostile), "status": "finished", "error": None,
             "seconds": 3.0},
            {"name": STUDY_RUN, "factors": factors, "path": str(tmp_path / "x"), "status": "failed",
             "error": STUDY_ERROR, "seconds": 1.0}]
    (study / "study.json").write_text(json.dumps({"name": STUDY_NAME, "runs": runs}))
    cfg = StudyConfig.model_validate({"name": STUDY_NAME, "base": {}, "factors": {
        "training.epochs": [1], "strategy.name": [FACTOR_VALUE]}})
    products = write_study_products(study, [(load_run(hostile), factors)], cfg.statistics)
    report = build_study_report(study, [(hostile, factors)], cfg, products)
    html = (report / "index.html").read_text()
    for s in [STUDY_NAME, STUDY_RUN, STUDY_ERROR, FACTOR_VALUE, TASK_A]:
        assert s not in html
    assert_nothing_injected(html, shown=[STUDY_NAME, STUDY_RUN, STUDY_ERROR, FACTOR_VALUE, TASK_A])
    md = (report / "report.md").read_text()
    assert md.splitlines()[0] == "# dncsim study: \\<img src=x onerror=alert(6)\\>"
    assert "- `<svg onload=alert(7)>`: diverged: \\<script\\>alert(8)\\</script\\> \\| \\*\\*loud\\*\\*" in md
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    page = assert_nothing_injected(rendered, shown=[STUDY_NAME, STUDY_RUN, STUDY_ERROR, FACTOR_VALUE])
    assert "strong" not in {tag for tag, _ in page.elements}
    figures = json.loads((report / "summary.json").read_text())["figures"]
    links = [a["src"] for tag, a in page.elements if tag == "img"]      # escaped names still link the files
    assert figures and links == [f"figures/{name}.png" for name in figures]
    assert all((report / link).is_file() for link in links)
