"""The report opens in a real browser: headless Chromium (Debian's chromium and chromium-driver, which
.ci/run installs) renders it without console errors, none of its images is blank, and the page never
scrolls sideways at 1280 px (the width of a laptop screen) or 1920 px."""
import json
import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from dncsim.analysis.report import build_report

# every image drawn on a canvas: its size and how many distinct colours it has
IMAGE_STATS = """
return Array.from(document.images).map(function (img) {
  var c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  var ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
  var d = ctx.getImageData(0, 0, c.width, c.height).data, seen = {}, n = 0;
  for (var i = 0; i < d.length; i += 4 * 97) { var k = d[i] + ',' + d[i+1] + ',' + d[i+2];
    if (!seen[k]) { seen[k] = 1; n++; } }
  return {w: img.naturalWidth, h: img.naturalHeight, complete: img.complete, colours: n,
          shown: img.getBoundingClientRect().width};
});
"""


def chromium_driver():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, ("this test needs Debian's chromium and chromium-driver packages "
                                 "(apt-get install chromium chromium-driver; .ci/run installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--allow-file-access-from-files"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def test_report_renders_in_headless_chromium(tmp_path):
    from tests.support.report_runs import make_run
    out = build_report(make_run(tmp_path / "run"))
    figures = json.loads((out / "summary.json").read_text())["figures"]
    browser = chromium_driver()
    try:
        browser.set_window_size(1280, 1000)
        browser.get((out / "index.html").as_uri())
        assert browser.title.startswith("dncsim report")
        stats = browser.execute_script(IMAGE_STATS)
        widths = {}
        for width in (1280, 1920):
            browser.set_window_size(width, 1000)
            widths[width] = browser.execute_script(
                "var d = document.documentElement; document.querySelectorAll('details').forEach("
                "function (e) { e.open = true; }); return [d.scrollWidth, window.innerWidth];")
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    finally:
        browser.quit()
    assert errors == []
    for width, (scroll, inner) in widths.items():
        assert 1000 < inner <= width and scroll <= inner, (width, scroll, inner)   # no horizontal scroll
    assert len(stats) == len(figures) == 10
    for s in stats:
        assert s["complete"] and s["w"] > 200 and s["h"] > 150 and s["shown"] > 100, s
        assert s["colours"] > 8, s                      # a plot, not a blank or single-colour image


# every element that data could have injected: handlers, <img src=x>, <svg>, <b>, and scripts with alert
INJECTED = """
var all = Array.from(document.querySelectorAll('*'));
return {handlers: all.filter(function (e) { return Array.from(e.attributes).some(function (a) {
          return a.name.indexOf('on') === 0; }); }).map(function (e) { return e.outerHTML.slice(0, 80); }),
        imgs: Array.from(document.images).filter(function (i) { return !i.src.startsWith('data:image/png'); })
                .map(function (i) { return i.outerHTML.slice(0, 80); }),
        elements: Array.from(document.querySelectorAll('svg, b, a, script')).filter(function (e) {
          var href = e.getAttribute('href') || '';     // the report's own contents links and CSV download
          return !(e.tagName === 'A' && (href.indexOf('#') === 0 || href.indexOf('data:text/csv;base64,') === 0));
        }).map(function (e) {
          return e.outerHTML.slice(0, 80); }),
        text: document.body.innerText, title: document.title};
"""


def test_a_report_of_hostile_names_runs_no_script_in_chromium(tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.hostile import RUN_NAME, TASK_A, TASK_B, VALUES_A, hostile_run
    run = hostile_run(tmp_path / "run")
    out = build_report(run, compare=[run])
    browser = chromium_driver()
    try:
        browser.get((out / "index.html").as_uri())
        try:                                     # onerror/onload handlers would fire within this wait
            WebDriverWait(browser, 3).until(expected_conditions.alert_is_present())
            alert = browser.switch_to.alert.text
        except TimeoutException:
            alert = None
        found = browser.execute_script(INJECTED)
    finally:
        browser.quit()
    assert alert is None
    assert found["handlers"] == [] and found["imgs"] == [] and found["elements"] == []
    assert found["title"] == f"dncsim report: {RUN_NAME}"
    for shown in (TASK_A, TASK_B, VALUES_A[0]):      # the payloads are on the page, as text
        assert shown in found["text"]
