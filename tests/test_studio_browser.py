"""The studio in a real browser: headless Debian Chromium (`/usr/bin/chromium`, installed by `make` / `.ci/run`)
driven by Playwright against a real `python -m rewrite.studio` server. One session: load the toy model, draw
the copy and paste boxes with mouse drags, add context by drawing and by "add top matches", run rank_one,
check the after-images and the numbers, download the edit file (`rewrite-edit show` reads it) and the request
YAML (its command reproduces the same metrics through `python -m rewrite`). Screenshots of each step are saved
under the test's temporary folder. The server's file route is probed for path traversal."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium (apt-get install chromium; make test installs it)")
ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = ["stats.num_samples=200"]  # statistics in a second; the reproducing command carries it too
TIMES = {"edit_time_s", "stats_time_s", "stats_cached", "torch_threads", "hydra_overrides"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    out = tmp_path_factory.mktemp("studio")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},  # NiceGUI reads it as its own tests
           "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "REWRITE_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    port = free_port()
    log = (out.parent / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "rewrite.studio", "--port", str(port), "--out", str(out),
                             "--threads", "1", *OVERRIDES], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"the studio server exited: "
                                       f"{(out.parent / 'server.log').read_text()[-3000:]}") from None
                time.sleep(0.25)
        yield url, out, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def page(server: tuple[str, Path, dict[str, str]]) -> Iterator[object]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1500, "height": 1500}, accept_downloads=True)
        pg.set_default_timeout(60_000)
        pg.goto(server[0])
        yield pg
        browser.close()


class Shots:
    def __init__(self, folder: Path) -> None:
        self.folder, self.n = folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, pg: object, name: str) -> None:
        self.n += 1
        pg.screenshot(path=str(self.folder / f"{self.n:02d}_{name}.png"))


def tile(pg: object, seed: int) -> object:
    return pg.locator(f"[data-seed='{seed}'] img").first


def drag(pg: object, seed: int, a: tuple[float, float], b: tuple[float, float], size: int = 64) -> None:
    """A mouse drag from image pixel `a` to `b` on sample `seed` (the tile shows the image scaled up)."""
    el = tile(pg, seed)
    el.scroll_into_view_if_needed()
    box = el.bounding_box()
    k = box["width"] / size
    pg.mouse.move(box["x"] + a[0] * k, box["y"] + a[1] * k)
    pg.mouse.down()
    pg.mouse.move(box["x"] + b[0] * k, box["y"] + b[1] * k, steps=4)
    pg.mouse.up()


def show_seed(pg: object, seed: int) -> None:
    pg.locator("input[data-testid=seed], [data-testid=seed] input").first.fill(str(seed))
    pg.get_by_test_id("go").click()
    tile(pg, seed).wait_for()


def request_info(pg: object) -> object:
    return pg.get_by_test_id("request-info")


def test_make_see_and_keep_an_edit(page: object, server: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    pw = playwright
    pg, (_, out, env) = page, server
    shot = Shots(tmp_path / "screenshots")
    shot(pg, "page")
    pg.get_by_test_id("load").click()  # the toy generator is the default choice
    tile(pg, 0).wait_for()
    pw.expect(pg.get_by_test_id("model-info")).to_contain_text("toy_stylegan2 at convs.4")
    shot(pg, "model")

    show_seed(pg, 256)  # the copy: a tree at the building's left corner (the toy_add_tree example)
    drag(pg, 256, (18, 42), (8, 29))
    pw.expect(request_info(pg)).to_contain_text("copy:  seed 256 box [8, 29, 18, 42]")
    show_seed(pg, 33)  # the paste: placed by the mouse where the same place is empty
    drag(pg, 33, (15, 35), (16, 36.5))
    pw.expect(request_info(pg)).to_contain_text("paste: seed 33 box [11, 30, 21, 43]")
    pw.expect(pg.get_by_test_id("goal").locator("img")).to_have_attribute("src", re.compile(r"^data:image/png"))
    shot(pg, "copy_and_paste")

    pg.get_by_test_id("mode").get_by_text("context").click()
    drag(pg, 24, (11, 30), (21, 43))
    pw.expect(request_info(pg)).to_contain_text("context: 1 region(s)")
    drag(pg, 25, (11, 30), (11, 30))  # a click is an empty box: one line on the page, and the page goes on
    pw.expect(pg.locator(".studio-error").last).to_contain_text("is empty")
    pg.get_by_test_id("heat").click()
    pg.get_by_test_id("top-matches").click()
    pw.expect(request_info(pg)).to_contain_text("context: 5 region(s)")
    shot(pg, "context_and_heat_map")

    pg.get_by_label("toy world ground truth (rule)").click()
    pg.get_by_role("option", name="add_tree").click()
    pw.expect(request_info(pg)).to_contain_text(  # the rule's request searches 1,500 scenes first
        "held-out: 32 region(s); ground truth: toy rule add_tree", timeout=60_000)
    pg.get_by_test_id("run").click()
    pw.expect(pg.get_by_test_id("progress")).to_contain_text("done in", timeout=180_000)
    shown = {n: float(pg.locator(f"[data-metric='{n}']").inner_text())
             for n in ("efficacy", "generality", "specificity", "edit_score")}
    assert all(0 <= v <= 1 for v in shown.values()), shown
    pw.expect(pg.get_by_test_id("scores")).to_contain_text("exact ideal (toy world)")
    grid = pg.get_by_test_id("grid").locator("img")
    pg.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=grid.element_handle())
    assert grid.evaluate("img => img.naturalWidth") > 500  # source, before, after, difference, ideal columns
    pw.expect(pg.get_by_test_id("ceiling")).to_contain_text("paste ceiling at this layer", timeout=120_000)
    shot(pg, "result")

    with pg.expect_download() as dl:
        pg.get_by_test_id("edit-link").click()
    edit = tmp_path / "edit.safetensors"
    dl.value.save_as(edit)
    with pg.expect_download() as dl:
        pg.get_by_test_id("yaml-link").click()
    request = tmp_path / "request.yaml"
    dl.value.save_as(request)
    show = subprocess.run([sys.executable, "-m", "rewrite.editfile.cli", "show", str(edit)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    described = json.loads(show.stdout)
    assert described["request"]["paste"] == {"seed": 33, "box": [11, 30, 21, 43]}
    assert described["strategy"]["name"] == "rank_one" and described["layer"] == "convs.4.conv.weight"

    command = request.read_text().splitlines()[0].removeprefix("# reproduce: ")
    words = [w if not w.startswith("edit.file=") else f"edit.file={request}" for w in shlex.split(command)]
    assert words[:3] == ["python", "-m", "rewrite"]
    cli = subprocess.run([sys.executable, *words[1:], f"hydra.run.dir={tmp_path}/cli"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert {n: round(cli_metrics[n], 3) for n in shown} == shown
    run_folder = next((out / "runs").iterdir())
    studio_metrics = json.loads((run_folder / "metrics.json").read_text())
    same = {k: v for k, v in studio_metrics.items() if k not in TIMES}
    assert same == {k: cli_metrics[k] for k in same}

    pg.get_by_test_id("keep").click()
    pw.expect(pg.get_by_test_id("history")).to_contain_text("history (1 kept)")
    pg.get_by_test_id("undo").click()
    pw.expect(pg.get_by_test_id("history")).to_contain_text("history (0 kept)")
    shot(pg, "kept_and_undone")


def test_the_server_serves_nothing_outside_its_folder(server: tuple[str, Path, dict[str, str]], tmp_path: Path
                                                     ) -> None:
    url, out, _ = server
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    (out / "link.txt").symlink_to(secret)
    (out / "hello.txt").write_text("hello")
    host, port = url.removeprefix("http://").split(":")

    def get(path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", path)  # sent as written: no client-side clean-up of the dots
        resp = conn.getresponse()
        return resp.status, resp.read()

    assert get("/files/hello.txt") == (200, b"hello")
    for path in ("/files/../../../etc/passwd", "/files/..%2F..%2F..%2Fetc%2Fpasswd", "/files/%2e%2e/%2e%2e/etc/passwd",
                 f"/files/{'..%2F' * 12}{str(secret).lstrip('/')}", "/files/%2Fetc%2Fpasswd", "/files/link.txt",
                 "/files/", "/files/runs/../../secret.txt"):
        status, body = get(path)
        assert status == 404 and b"not for the page" not in body and b"root:" not in body, path
