"""The HTML pages: escaping and table markup, the listening report's files, and both pages
rendered in headless Chromium (the system browser, driven by Playwright)."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from sepvae.layout import Layout
from sepvae.errors import SepvaeError
from sepvae.pipeline import listening, report
from sepvae.results.html import Listening, Section, page, table_html, write_report_html
from sepvae.results.tables import Styled, Table
from tests.results_fixtures import write_fixture_results

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots a person can look at after `make test` (reports/ is git-ignored).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "reports" / "browser-test"


def test_table_html_escapes_and_marks_headers():
    rows = (("<b>a&b</b>", "1.0"), (Styled('x"y', "strong"), "–"))
    table = Table(("method", "SDR (dB)"), rows, (False, True), caption="Scores <all>")
    text = table_html(table)
    assert "<caption>Scores &lt;all&gt;</caption>" in text
    assert '<th scope="col" class="num">SDR (dB)</th>' in text
    assert '<th scope="row" class="nowrap">&lt;b&gt;a&amp;b&lt;/b&gt;</th>' in text and "<strong>x&quot;y</strong>" in text
    assert '<td class="num"><span class="nowrap">1.0</span></td>' in text
    with pytest.raises(ValueError, match="need 2 cells"):
        Table(("a", "b"), (("1",),), (False, False))


def test_page_escapes_title_and_links_sections():
    text = page("<script>alert(1)</script>", [Section("A & B", "a-b", paragraphs=("x < y",))])
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert '<a href="#a-b">A &amp; B</a>' in text and "<p>x &lt; y</p>" in text


@pytest.fixture(scope="module")
def report_dir(tiny_run):
    """The tiny run's report with one mixture to listen to (the report stage takes seconds)."""
    experiment, paths, _, _ = tiny_run
    return report(experiment, paths, listen=1).parent


def test_listening_report_files(tiny_run, report_dir, tmp_path):
    experiment, paths, _, metrics = tiny_run
    text = (report_dir / "index.html").read_text()
    clips = sorted((report_dir / "audio").rglob("*.flac"))
    assert len(clips) == 1 + 2 + 7 * 2  # the mixture, two references, seven methods x two sources
    assert len(list((report_dir / "audio").rglob("*.png"))) == len(clips)
    assert "Showing 1 of 2 test mixtures" in text and text.count("<audio controls") == len(clips)
    assert 'src="violins.png"' in text and 'src="spectrograms.png"' in text and "<caption>Per source</caption>" in text
    assert "SDR " in text and "PESQ " in text
    import soundfile as sf

    assert sf.info(str(clips[0])).subtype == "PCM_16" and sf.info(str(clips[0])).samplerate == 16000
    out = tmp_path / "more"
    shutil.copytree(report_dir, out)
    write_report_html(metrics, out, "more", listening(experiment, paths, 5))
    assert len(list((out / "audio").rglob("*.flac"))) == 2 * len(clips)
    assert "Showing 2 of 2 test mixtures" in (out / "index.html").read_text()


def test_listening_without_runs_says_why(tiny_run, tmp_path):
    experiment, paths, _, _ = tiny_run
    alone = Layout(corpus=tmp_path / "none.csv", mixtures=paths.mixtures, runs=tmp_path / "no-runs",
                   reports=paths.reports)
    found = listening(experiment, alone, 10)
    assert found.mixtures == () and "estimates not found" in found.problem and "sepvae separate-set" in found.problem
    assert not (tmp_path / "no-runs").exists()
    elsewhere = Layout(reports=tmp_path / "reports")
    assert "separations.json not found" in listening(experiment, elsewhere, 10).problem
    with pytest.raises(SepvaeError, match="--listen must be 0 or more"):
        report(experiment, paths, listen=-1)
    out = tmp_path / "silent"
    shutil.copytree(paths.reports / experiment.name, out)
    text = (write_report_html(out / "metrics.csv", out, "t", Listening())).read_text()
    assert "--listen 0" in text and "<audio" not in text and not (out / "audio").exists()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[browser]'")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def serve():
    """Serve a folder over HTTP on 127.0.0.1 from a thread; yields a function folder -> base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the browser drops media connections once it has the metadata: not a failure


def _check_page(browser, url: str, screenshot: Path) -> dict:
    """Open ``url``, load every audio's metadata and every image, screenshot the page.
    Returns what the page showed: console errors, failed requests, audio durations, images."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors, failed = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Chromium aborts a media request once it has the metadata it asked for: not a failure.
    page.on("requestfailed", lambda request: failed.append(request.url)
            if request.failure != "net::ERR_ABORTED" else None)
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.goto(url, wait_until="load")
    # preload="none" and loading="lazy" keep a real visit light; here every player and
    # image is made to load, as clicking play and scrolling down would.
    durations = page.evaluate("""() => Promise.all([...document.querySelectorAll('audio')].map(audio =>
        new Promise(resolve => {
            audio.addEventListener('loadedmetadata', () => resolve(audio.duration), {once: true});
            audio.addEventListener('error', () => resolve(-1), {once: true});
            audio.preload = 'metadata'; audio.load();
        })))""")
    images = page.evaluate("""() => Promise.all([...document.querySelectorAll('img')].map(img => {
        img.loading = 'eager';
        return img.decode().then(() => [img.getAttribute('src'), img.naturalWidth],
                                 () => [img.getAttribute('src'), 0]);
    }))""")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return {"errors": errors, "failed": failed, "durations": durations, "images": images}


def test_pages_in_headless_chromium(browser, serve, report_dir, tmp_path):
    seen = _check_page(browser, serve(report_dir) + "index.html", SCREENSHOTS / "index.png")
    assert seen["errors"] == [] and seen["failed"] == []
    assert len(seen["durations"]) == 17 and all(d > 0.5 for d in seen["durations"]), seen["durations"]
    assert len(seen["images"]) == 3 + 17 and all(width > 0 for _, width in seen["images"]), seen["images"]
    assert (SCREENSHOTS / "index.png").stat().st_size > 10_000


    results_md = write_fixture_results(tmp_path)[0]
    seen = _check_page(browser, serve(results_md.parent) + "results.html", SCREENSHOTS / "results.png")
    assert seen["errors"] == [] and seen["failed"] == [] and seen["durations"] == []
    assert len(seen["images"]) == 3 and all(width > 0 for _, width in seen["images"]), seen["images"]
