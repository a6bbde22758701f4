"""The drill's HTML timeline (iot_tools.drill.html), drawn from a real drill's report.

One short real drill (a NATS outage at time scale 0.1, about half a minute) writes both the
JSON and the HTML; the page is parsed strictly (html.parser for the page, xml.etree for the
SVG) and checked against the JSON: a band per service, a shaded region per phase at the
phase's own start/end through the axis, each failed probe a tick carrying its reason, and
nothing referenced outside the file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from iot_tools.drill.html import Axis, lane_segments, render_html, render_svg, timeline_end

SVG = "{http://www.w3.org/2000/svg}"
SCALE = 0.1


@pytest.fixture(scope="module")
def drill(tmp_path_factory) -> tuple[dict, str]:
    directory = tmp_path_factory.mktemp("html-drill")
    report, page = directory / "report.json", directory / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "iot_tools.drill", "--plain", "--time-scale", str(SCALE),
         "--faults", "nats-outage", "--warmup", "0", "--settle", "2",
         "--report", str(report), "--html", str(page), "--workdir", str(directory / "work")],
        capture_output=True, text=True, timeout=240, check=False)
    assert report.exists() and page.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(report.read_text()), page.read_text(encoding="utf-8")


class StrictPage(HTMLParser):
    """Collects tags and attributes; fails on unbalanced non-void elements."""

    # SVG shapes written as <rect .../> are reported by startendtag.
    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "area", "base",
                      "wbr", "source", "track", "embed", "param"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def _svg(page: str) -> ET.Element:
    match = re.search(r"<svg\b.*?</svg>", page, re.DOTALL)
    assert match, "no <svg> in the page"
    return ET.fromstring(match.group(0))  # strict XML: a stray & or < fails here


def test_the_page_is_well_formed_and_self_contained(drill: tuple[dict, str]) -> None:
    _report, page = drill
    parser = StrictPage()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed elements: {parser.stack}"
    names = {tag for tag, _ in parser.tags}
    assert "script" not in names and "iframe" not in names and "link" not in names
    for tag, attrs in parser.tags:
        for name in ("src", "href", "xlink:href", "srcset", "action", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), f"<{tag} {name}={value!r}>"
    lowered = page.lower()
    for forbidden in ("http://", "https://", "file:", "@import", "url(", "//", "<script"):
        # The SVG namespace is an identifier, never fetched; it is the only URL allowed.
        assert lowered.replace("http://www.w3.org/2000/svg", "").count(forbidden) == 0, \
            forbidden


def test_one_band_per_service_with_its_lanes(drill: tuple[dict, str]) -> None:
    report, page = drill
    svg = _svg(page)
    bands = svg.findall(f".//{SVG}g[@class='band']")
    assert [band.get("data-service") for band in bands] == list(report["services"])
    for band in bands:
        lanes = {g.get("class") for g in band.iter() if (g.get("class") or "")
                 .startswith("lane ")}
        assert {"lane lane-process", "lane lane-readiness"} <= lanes


def test_a_shaded_region_per_phase_at_its_start_and_end(drill: tuple[dict, str]) -> None:
    report, page = drill
    svg = _svg(page)
    axis = Axis(timeline_end(report))
    regions = svg.findall(f".//{SVG}rect[@class='phase']")
    assert [r.get("data-phase") for r in regions] == [p["name"] for p in report["phases"]]
    assert [p["name"] for p in report["phases"]] == ["warm-up", "nats-outage"]
    for region, phase in zip(regions, report["phases"], strict=True):
        x = float(region.get("x"))
        width = float(region.get("width"))
        assert x == pytest.approx(axis.x(phase["started_at"]), abs=0.02)
        assert x + width == pytest.approx(axis.x(phase["ended_at"]), abs=0.05)
        title = region.find(f"{SVG}title").text
        verdict = "PASS" if phase["ok"] else "FAIL"
        assert title.startswith(f"{phase['name']} {verdict}")
        # The phase's expectations are spelled out, each with its outcome.
        for check in phase["checks"]:
            assert f"{check['check']} expected {check['expected']}" in title


def test_every_probe_failure_is_a_tick_with_its_reason(drill: tuple[dict, str]) -> None:
    report, page = drill
    svg = _svg(page)
    axis = Axis(timeline_end(report))
    failures = [(service, f) for service, info in report["services"].items()
                for f in info["probe_failures"]]
    # NATS went away: at least ingest's readiness failed (503), every time it was probed.
    assert any(s == "ingest_iot" and f["kind"] == "readiness" for s, f in failures)
    for band in svg.findall(f".//{SVG}g[@class='band']"):
        service = band.get("data-service")
        ticks = band.findall(f"{SVG}line[@class='tick']")
        own = [f for s, f in failures if s == service]
        assert len(ticks) == len(own)
        for tick, failure in zip(ticks, own, strict=True):
            assert float(tick.get("x1")) == pytest.approx(axis.x(failure["t"]), abs=0.02)
            text = tick.find(f"{SVG}title").text
            assert f"{failure['kind']} probe failed" in text and failure["detail"] in text


def test_telemetry_lane_is_sampled_and_ends_at_the_published_count(
        drill: tuple[dict, str]) -> None:
    report, page = drill
    svg = _svg(page)
    samples = report["telemetry"]["samples"]
    assert len(samples) >= 5
    series = {p.get("data-series"): p for p in svg.findall(f".//{SVG}polyline")}
    assert {"published", "ingested"} <= set(series)
    published = samples[-1]["published"] - samples[0]["published"]
    assert f"published: {published} " in series["published"].find(f"{SVG}title").text


def test_the_page_is_the_json_rendered(drill: tuple[dict, str]) -> None:
    """One source: rendering the saved JSON again gives the page the drill wrote."""
    report, page = drill
    assert render_html(report) == page


def test_time_axis_shows_real_speed_seconds_beside_drill_seconds(
        drill: tuple[dict, str]) -> None:
    _report, page = drill
    svg = _svg(page)
    texts = [t.text or "" for t in svg.iter(f"{SVG}text")]
    # A tick at 10 drill seconds at scale 0.1 is 100 s at real speed.
    assert "10 s" in texts and "(100 s)" in texts


def test_restart_lanes_and_marker_from_kill_exit_launch() -> None:
    """A liveness kill: terminating until the exit, back-off until the relaunch, a marker."""
    report = {
        "time_scale": 0.2, "wall_seconds": 60.0, "phases": [],
        "services": {"ingest_iot": {"probes": {"liveness": {}, "readiness": {}},
                                    "probe_failures": []}},
        "timeline": [
            {"t": 1.0, "kind": "launched", "service": "ingest_iot", "detail": "started"},
            {"t": 2.0, "kind": "started", "service": "ingest_iot", "detail": "no probe"},
            {"t": 3.0, "kind": "ready", "service": "ingest_iot", "detail": "200"},
            {"t": 20.0, "kind": "kill", "service": "ingest_iot", "detail": "liveness 3×"},
            {"t": 30.0, "kind": "exited", "service": "ingest_iot", "detail": "SIGKILL"},
            {"t": 32.0, "kind": "launched", "service": "ingest_iot", "detail": "restart 1"}],
    }
    process = [(s.state, s.start, s.end) for s in lane_segments(report, "ingest_iot",
                                                                  60.0)["process"]]
    assert process == [("waiting", 0.0, 1.0), ("running", 1.0, 20.0),
                       ("terminating", 20.0, 30.0), ("back-off", 30.0, 32.0),
                       ("running", 32.0, 60.0)]
    svg = ET.fromstring(render_svg(report))
    markers = svg.findall(f".//{SVG}path[@class='restart']")
    assert len(markers) == 1 and "liveness 3×" in markers[0].find(f"{SVG}title").text


def test_renders_again_from_a_saved_report(tmp_path: Path, drill: tuple[dict, str]) -> None:
    report, page = drill
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps(report))
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "iot_tools.drill.html", str(saved), "--html",
                    str(tmp_path / "r.html"), "--svg", str(tmp_path / "r.svg")],
                   check=True, capture_output=True, timeout=60)
    assert time.monotonic() - began < 30
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == page
    ET.parse(tmp_path / "r.svg")


# -- in a real browser ----------------------------------------------------------------------

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# What the test adds to its own copy of the page (the report itself has no script): the
# laid-out size of every band and lane, and every resource the page tried to load.
MEASURE = """<script>
const boxes = [...document.querySelectorAll("g.band, g.band g[class^='lane ']")].map(
  (element) => { const box = element.getBoundingClientRect();
                 return {cls: element.getAttribute("class"),
                         service: element.closest("g.band").dataset.service,
                         width: box.width, height: box.height}; });
const loads = performance.getEntriesByType("resource").map((entry) => entry.name);
const out = document.createElement("pre");
out.id = "measured";
out.textContent = JSON.stringify({boxes, loads});
document.body.appendChild(out);
</script>"""


def chromium() -> str:
    """The browser `make test` installs (scripts/bootstrap-chromium.sh), or $CHROMIUM."""
    import os
    import shutil

    binary = os.environ.get("CHROMIUM") or shutil.which("chromium")
    assert binary, "chromium missing: run scripts/bootstrap-chromium.sh (make test does)"
    return binary


def run_chromium(*arguments: str) -> subprocess.CompletedProcess[str]:
    # Headless, no sandbox (tests run as root), and no network: every host resolves to
    # nothing and any proxied request would go to a closed port.
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--proxy-server=http://127.0.0.1:9", "--virtual-time-budget=5000",
               *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_a_real_browser_lays_out_every_lane_and_loads_nothing(
        tmp_path: Path, drill: tuple[dict, str]) -> None:
    report, page = drill
    instrumented = tmp_path / "measured.html"
    instrumented.write_text(page.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    result = run_chromium("--dump-dom", instrumented.as_uri())
    match = re.search(r'<pre id="measured">(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, f"no measurement in the DOM dump:\n{result.stderr[-2000:]}"
    measured = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert measured["loads"] == [], "the page tried to load something"
    bands = [box for box in measured["boxes"] if box["cls"] == "band"]
    assert [band["service"] for band in bands] == list(report["services"])
    lanes = [box for box in measured["boxes"] if box["cls"].startswith("lane ")]
    assert len(lanes) >= 2 * len(bands)
    for box in bands + lanes:
        assert box["width"] > 0 and box["height"] > 0, f"not drawn: {box}"


def test_a_real_browser_screenshot_is_kept_as_an_artifact(drill: tuple[dict, str],
                                                          tmp_path: Path) -> None:
    _report, page = drill
    source = tmp_path / "report.html"
    source.write_text(page, encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "drill-timeline.png"
    screenshot.unlink(missing_ok=True)
    result = run_chromium("--window-size=1600,1800", f"--screenshot={screenshot}",
                          source.as_uri())
    assert screenshot.exists(), result.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a drawn page, not a blank one
