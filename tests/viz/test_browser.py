"""The report renders in headless Chromium with no script errors and no broken images."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from histomil.viz.report import ReportOptions, build_report

pytestmark = pytest.mark.browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)  # fmt: skip

# Collects uncaught errors, console.error calls and resources that fail to load (capture phase),
# then, on load, any <img> that did not decode; the result lands in a body attribute for --dump-dom.
PROBE = """<script>
window.__errs = [];
window.addEventListener('error', function (e) {
  var t = e.target || {};
  window.__errs.push(e.message || ('resource failed: ' + (t.src || t.href || t.tagName)));
}, true);
window.addEventListener('unhandledrejection', function (e) { window.__errs.push('rejection: ' + e.reason); });
var __ce = console.error; console.error = function () {
  window.__errs.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); __ce.apply(console, arguments);
};
window.addEventListener('load', function () {
  Array.prototype.forEach.call(document.images, function (im) {
    if (!im.complete || im.naturalWidth === 0) window.__errs.push('broken image: ' + im.alt);
  });
  document.body.setAttribute('data-probe', JSON.stringify({errors: window.__errs,
    images: document.images.length, title: document.title}));
});
</script>"""


def render(html_path: Path, tmp_path: Path) -> dict:
    """Open a copy of the page with the probe injected first; return what the probe saw."""
    html = html_path.read_text(encoding="utf-8")
    probed = tmp_path / f"probed_{html_path.name}"
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r"data-probe=\"([^\"]*)\"", proc.stdout)
    assert match, (
        f"page did not finish loading; chromium rc={proc.returncode}\n{proc.stderr[-2000:]}"
    )
    import html as html_mod

    return json.loads(html_mod.unescape(match.group(1)))


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        pytest.skip("no chromium in PATH: install the Debian packages `chromium chromium-driver` "
                    "(scripts/test.sh does when run as root) to run the browser test")  # fmt: skip
    return CHROMIUM


def test_probe_catches_errors(chromium, tmp_path):
    """The harness must be able to fail: a page with a script error and a broken image."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                   '<img alt="missing" src="data:image/png;base64,AAAA">'
                   '<script>undefinedFunction();</script></body></html>')  # fmt: skip
    seen = render(bad, tmp_path)
    text = " ".join(seen["errors"])
    assert "undefinedFunction" in text and "broken image: missing" in text


def test_report_renders_without_errors(chromium, run_dir, tmp_path):
    out = build_report(run_dir, tmp_path / "report.html", ReportOptions(n_boot=50))
    seen = render(out, tmp_path)
    assert seen["errors"] == []
    assert seen["images"] >= 6 and "histomil run report" in seen["title"]
