"""Drive tools/web_demo.py in a real headless browser (Debian's chromium and chromium-driver,
through Selenium): start the server, open the page, upload an image, type a vocabulary, press
Segment, wait for the overlay and the segments table, take a screenshot. The tests
(tests/test_web_demo.py) and the screenshot in docs/deployment.md use these steps:

    python tools/web_demo_browser.py --config-file configs/synthetic_tiny.yaml --output docs/web_demo.png \\
        --opts MODEL.WEIGHTS output/synthetic_tiny/model_final.pth

starts the web demo on a free port of 127.0.0.1, segments a generated example image with the
config's vocabulary, saves the page as --output and stops the server. The browser runs with a
fresh profile and without background network traffic; every request the page makes is
recorded (``requests``), so a test can check that none leaves the server.
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver",)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")
SERVER_START_S = 300  # building a model and importing gradio on a busy 2-core machine
PAGE_WAIT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python tools/web_demo.py --config-file CONFIG ... --opts OPTS`` on a free port of
    127.0.0.1, its output in ``log``; :meth:`stop` ends it."""

    def __init__(self, config_file: str, opts: Sequence[str] = (), args: Sequence[str] = (), env: Optional[dict] = None,
                 log: Optional[Path] = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or Path(tempfile.mkstemp(prefix="web_demo_", suffix=".log")[1])
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "tools" / "web_demo.py"), "--config-file", config_file, "--port",
                 str(self.port), *args, "--opts", *opts], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + SERVER_START_S
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the web demo exited with status {self.process.returncode}:\n{self.tail()}")
            try:
                urllib.request.urlopen(self.url, timeout=5).close()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the web demo did not answer at {self.url} within {SERVER_START_S} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def browser_missing() -> Optional[str]:
    """Why no headless browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (bash tools/install.sh installs it)"
    if not any(os.access(p, os.X_OK) for p in CHROMIUM) or not any(os.access(p, os.X_OK) for p in CHROMEDRIVER):
        return (f"no Chromium ({' or '.join(CHROMIUM)}) and ChromeDriver ({CHROMEDRIVER[0]}) on this machine: "
                "apt-get install chromium chromium-driver")
    return None


class Browser:
    """A headless Chromium with a fresh profile, driven through ChromeDriver."""

    def __init__(self, width: int = 1400, height: int = 1000):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="web_demo_chromium_")
        options = webdriver.ChromeOptions()
        options.binary_location = next(p for p in CHROMIUM if os.access(p, os.X_OK))
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        service = Service(executable_path=next(p for p in CHROMEDRIVER if os.access(p, os.X_OK)))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(PAGE_WAIT_S)

    def close(self):
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def requests(self) -> List[str]:
        """URLs the page requested since the last call."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def wait(self, condition, timeout: float = PAGE_WAIT_S):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(condition)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.wait(lambda d: d.find_element(By.CSS_SELECTOR, css))

    def open(self, url: str):
        self.driver.get(url)
        self.find("#segment")

    def upload(self, image: Path):
        """Give the image component a file, as a drop or a file dialog does."""
        file_input = self.find("#input-image input[type=file]")
        file_input.send_keys(str(Path(image).resolve()))
        self.find("#input-image img")

    def pick_example(self, index: int):
        """Click an example image; wait for the image component to show it."""
        from selenium.webdriver.common.by import By

        self.find("#examples .gallery-item")
        self.driver.find_elements(By.CSS_SELECTOR, "#examples .gallery-item")[index].click()
        self.find("#input-image img")

    def type_vocabulary(self, text: str):
        box = self.find("#vocabulary textarea")
        box.clear()
        box.send_keys(text)

    def segment(self) -> Tuple[str, List[List[str]]]:
        """Press Segment; wait for a new overlay and a segments table of as many rows as the
        status line says. Returns the overlay's source URL and the table's rows (cell texts)."""
        before = self.overlay_source()
        self.find("#segment").click()
        self.wait(lambda d: self.overlay_source() not in (None, before))
        count = int(self.find("#status").text.split()[0])
        self.wait(lambda d: self.find("#segments [role=grid]").get_attribute("aria-rowcount") == str(count + 1))
        return self.overlay_source(), self.table_rows()

    def overlay_source(self) -> Optional[str]:
        from selenium.webdriver.common.by import By

        images = self.driver.find_elements(By.CSS_SELECTOR, "#overlay img")
        return images[0].get_attribute("src") if images else None

    def table_rows(self) -> List[List[str]]:
        """The cell texts of the segments table's rows on screen."""
        from selenium.webdriver.common.by import By

        rows = {}
        for cell in self.driver.find_elements(By.CSS_SELECTOR, "#segments [role=gridcell]"):
            rows.setdefault(int(cell.get_attribute("data-row")), []).append(cell.text)
        return [rows[k] for k in sorted(rows)]

    def select_row(self, row: int) -> str:
        """Click a cell of a row of the segments table; wait for the overlay to change and
        return its new source URL."""
        before = self.overlay_source()
        self.find(f'#segments [role=gridcell][data-row="{row}"][data-col="1"]').click()
        return self.wait(lambda d: self.overlay_source() not in (None, before) and self.overlay_source())

    def error_text(self, contains: str) -> str:
        """The text of the error message on screen that contains ``contains`` (waits for it)."""
        from selenium.webdriver.common.by import By

        xpath = f"//*[contains(@class, 'toast')][contains(., {json.dumps(contains)})]"
        shown = self.wait(lambda d: next((e for e in d.find_elements(By.XPATH, xpath) if e.is_displayed()), None))
        return shown.get_attribute("textContent")

    def screenshot(self, path: Path):
        """The whole page as a PNG, also what lies below the window."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                                      "clip": clip})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(shot["data"]))


def example_image(config_file: str, folder: Path) -> Path:
    """The web demo's first example image for the config's model family (the kind of image its
    embedded default was trained on)."""
    import cv2

    from sed.config import build_config
    from sed.family import get_family
    from sed.tools.web_demo import EXAMPLE_SEEDS, EXAMPLE_SIZE

    image = get_family(build_config(config_file)).example_image(EXAMPLE_SEEDS[0], EXAMPLE_SIZE)
    path = Path(folder) / "shapes.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="screenshot (PNG)")
    parser.add_argument("--image", help="image to segment (default: a generated one)")
    parser.add_argument("--vocabulary", help="one class per line (default: the config's test vocabulary)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    missing = browser_missing()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(args.image) if args.image else example_image(args.config_file, Path(tmp))
        server = Server(args.config_file, args.opts)
        browser = Browser()
        try:
            browser.open(server.url)
            browser.upload(image)
            if args.vocabulary is not None:
                browser.type_vocabulary(args.vocabulary)
            _, rows = browser.segment()
            browser.screenshot(Path(args.output))
        finally:
            browser.close()
            server.stop()
    print(f"{len(rows)} segments; screenshot written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
