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
    from tests.analysis.test_report import make_run
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
