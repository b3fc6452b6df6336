"""Likeness Studio in real headless Chromium against the real services (trainer, inference, gallery with API
keys): sign-in, discover with images and infinite scroll, the XSS probe, the whole new-subject flow on the toy
model ending with a generated image, cancel, an expired key, services unavailable, phone width, keyboard."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest
from browser_helpers import click_to_navigate, console_errors, wait_css, wait_text
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from likeness.controlplane.database import Database
from likeness.controlplane.migrate import migrate
from likeness.identity.keys import ApiKeys
from likeness.server.embedded import EmbeddedServer
from likeness.server.settings import Settings
from likeness.studio.server import StudioServer
from likeness_client import LikenessClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_helpers import photo_bytes

XSS_PROMPT = 'a lighthouse <script>window.__xss = "script"</script><img src=x onerror="window.__xss=1">'
MAX_PHOTO_BYTES = 1024 * 1024


class Stack:
    def __init__(self, root: Path) -> None:
        self.settings = Settings(
            storage_url=str(root / "storage"),
            cache_dir=str(root / "cache"),
            database_url=f"sqlite:///{root / 'likeness.db'}",
            auth="api-key",
            auth_cache_seconds=0,
            device="cpu",
        )
        database = Database(self.settings.database_url)
        migrate(database)
        self.keys = ApiKeys(database)
        self.key = self.keys.create("studio-tenant")[1]
        self.services = EmbeddedServer(self.settings, ["trainer", "inference", "gallery"]).__enter__()
        self.studio = StudioServer(
            self.settings, self.services.address, host="127.0.0.1", port=0, max_photo_bytes=MAX_PHOTO_BYTES
        ).start()
        self.url = self.studio.url.rstrip("/")

    def client(self) -> LikenessClient:
        return LikenessClient(self.services.address, api_key=self.key, timeout=120)

    def close(self) -> None:
        self.studio.stop()
        self.services.__exit__(None, None, None)
        self.keys.database.dispose()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("studio"))
    with running.client() as client:
        png = _png((200, 90, 40))
        running.probe_id = client.record_prompt(XSS_PROMPT, image=png, tags=["probe"]).prompt.prompt_id
        for index in range(30):
            client.record_prompt(f"a lighthouse at dusk, study {index}", image=_png((index * 8, 120, 200)))
    yield running
    running.close()


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(out, "PNG")
    return out.getvalue()


def sign_in(browser, stack: Stack, key: str | None = None) -> None:
    browser.delete_all_cookies()
    browser.get(stack.url + "/signin")
    field = wait_css(browser, "#api_key")
    field.send_keys(key or stack.key)
    field.send_keys(Keys.ENTER)
    wait_css(browser, "#q")


def test_sign_in_is_required_and_a_bad_key_is_refused(browser, stack) -> None:
    browser.delete_all_cookies()
    browser.get(stack.url + "/discover?q=lighthouse")
    assert "/signin" in browser.current_url
    wait_css(browser, "#api_key").send_keys("lk_000000000000_nonsense", Keys.ENTER)
    assert "not known" in wait_css(browser, ".error").text or "malformed" in browser.page_source
    sign_in(browser, stack)
    cookie = browser.get_cookie("likeness_studio")
    assert cookie["httpOnly"] and stack.key not in cookie["value"]
    assert browser.execute_script("return document.cookie") == ""  # scripts never see the session


def test_discover_shows_results_with_images_and_scrolls_on(browser, stack, shot) -> None:
    sign_in(browser, stack)
    console_errors(browser)
    query = wait_css(browser, "#q")
    query.send_keys("lighthouse dusk")
    wait_css(browser, '#results[data-query="lighthouse dusk"] .card img.thumb')
    assert "q=lighthouse" in browser.current_url  # instant search keeps the URL shareable
    # Pages hold 24 results: all 30 on screen means the grid fetched the next page as it scrolled.
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    wait = time.monotonic() + 10
    while len(browser.find_elements(By.CSS_SELECTOR, ".card")) < 30 and time.monotonic() < wait:
        time.sleep(0.1)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 30
    loaded = browser.execute_script(
        "return [...document.querySelectorAll('img.thumb')].slice(0, 4).every(i => i.complete && i.naturalWidth > 0)"
    )
    assert loaded
    assert "localhost" not in browser.page_source and "127.0.0.1" not in browser.page_source
    shot("discover")
    assert console_errors(browser) == []


def test_script_in_a_prompt_never_runs(browser, stack, shot) -> None:
    sign_in(browser, stack)
    browser.get(stack.url + "/discover?q=lighthouse+script")
    card = wait_css(browser, ".card .prompt")
    assert "<script>" in card.text  # shown as text
    click_to_navigate(wait_css(browser, ".card a"))
    assert "<script>" in wait_css(browser, "#prompt-text").text
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    shot("xss-probe")


def test_another_tenant_gets_neither_the_entry_nor_its_thumbnail(browser, stack) -> None:
    sign_in(browser, stack)
    browser.get(stack.url + "/discover?q=lighthouse+script")  # tenant A's search fills the thumbnail cache
    wait_css(browser, ".card img.thumb")
    other = stack.keys.create("other-tenant")[1]
    sign_in(browser, stack, other)
    for path in (f"/thumbs/{stack.probe_id}", f"/prompts/{stack.probe_id}"):
        browser.get(stack.url + path)
        assert "does not exist" in wait_css(browser, ".error").text


def test_a_query_of_punctuation_says_so(browser, stack) -> None:
    sign_in(browser, stack)
    browser.get(stack.url + "/discover?q=%21%21%3F%3F")
    assert wait_css(browser, ".notice").text
    assert browser.find_elements(By.CSS_SELECTOR, ".card") == []


def test_prompt_detail_and_reuse(browser, stack) -> None:
    sign_in(browser, stack)
    browser.get(stack.url + "/discover?q=study+7")
    click_to_navigate(wait_css(browser, ".card a"))
    assert "study" in wait_css(browser, "#prompt-text").text
    assert "uses" in wait_css(browser, "#params").text
    click_to_navigate(wait_css(browser, "#use-with-subject"))
    assert "study" in wait_css(browser, "#prompt").get_attribute("value")


def test_new_subject_train_watch_and_generate(browser, stack, shot, tmp_path) -> None:
    sign_in(browser, stack)
    browser.get(stack.url + "/subjects/new")
    files = []
    for index in range(3):
        path = tmp_path / f"photo-{index}.png"
        path.write_bytes(photo_bytes(index, 96))
        files.append(path)
    (tmp_path / "notes.txt").write_text("not a photo")
    files.append(tmp_path / "notes.txt")
    (tmp_path / "huge.jpg").write_bytes(b"\xff\xd8" + b"0" * (MAX_PHOTO_BYTES + 10))
    files.append(tmp_path / "huge.jpg")
    wait_css(browser, "#photos").send_keys("\n".join(str(path) for path in files))
    click_to_navigate(wait_css(browser, "#upload button[type=submit]"))
    wait_css(browser, "#report")
    kept = browser.find_elements(By.CSS_SELECTOR, ".photo[data-kept=true]")
    rejected = browser.find_elements(By.CSS_SELECTOR, ".photo[data-kept=false]")
    assert (len(kept), len(rejected)) == (3, 2)
    assert browser.find_elements(By.CSS_SELECTOR, ".photo[data-kept=true] svg.crop rect")
    reasons = " ".join(element.text for element in browser.find_elements(By.CSS_SELECTOR, ".reason"))
    assert "MiB" in reasons and "notes.txt" in browser.page_source
    shot("dataset-report")
    steps = wait_css(browser, "#steps")
    steps.clear()
    steps.send_keys("3")
    every = wait_css(browser, "#validate_every")
    every.clear()
    every.send_keys("1")
    click_to_navigate(wait_css(browser, "#train button[type=submit]"))
    wait_text(browser, "#state", "succeeded", timeout=240)
    wait_css(browser, "#validation img", timeout=30)
    shot("job")
    click_to_navigate(wait_css(browser, "#generate-with"))
    selected = wait_css(browser, "#subject_model_id option:checked")
    assert selected.get_attribute("value").startswith("sm-")
    wait_css(browser, "input[name=steps]").clear()
    wait_css(browser, "input[name=steps]").send_keys("4")
    wait_css(browser, "#generate button[type=submit]").click()
    image = wait_css(browser, "#images img.generated", timeout=120)
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 0
    shot("generate")


def test_cancel_a_running_job(browser, stack) -> None:
    with stack.client() as client:
        from likeness_client.v1 import trainer_service_pb2 as trainer_pb
        from likeness_client.v1 import types_pb2

        spec = trainer_pb.TrainingJobSpec(
            base_model="toy-sd15",
            class_noun="dog",
            method=types_pb2.TRAINING_METHOD_LORA,
            hyperparameters=trainer_pb.Hyperparameters(max_train_steps=5000, seed=1),
        )
        job = client.create_training_job(spec, photos=[(f"p{i}.png", photo_bytes(i, 96)) for i in range(3)]).job
    sign_in(browser, stack)
    browser.get(f"{stack.url}/jobs/{job.job_id}")
    click_to_navigate(wait_css(browser, "#cancel button"))
    wait_text(browser, "#state", "cancelled", timeout=60)


def test_an_expired_key_goes_back_to_sign_in(browser, stack) -> None:
    record, key = stack.keys.create("studio-tenant", expires_in=3600)
    sign_in(browser, stack, key)
    stack.keys.revoke(record.key_id)
    browser.get(stack.url + "/subjects")
    wait_css(browser, "#api_key")
    assert "/signin" in browser.current_url


def test_services_unavailable_shows_a_banner(browser, stack) -> None:
    dead = StudioServer(stack.settings, "127.0.0.1:9", host="127.0.0.1", port=0).start()
    try:
        browser.delete_all_cookies()
        browser.get(dead.url + "discover")
        assert "unavailable" in wait_css(browser, "main .banner.unavailable", timeout=30).text
    finally:
        browser.get("about:blank")  # leave before the page's own retry reloads from a stopped server
        dead.stop()


def test_phone_width_and_keyboard(browser, stack, shot) -> None:
    sign_in(browser, stack)
    browser.set_window_size(390, 844)
    try:
        browser.get(stack.url + "/discover?q=lighthouse")
        wait_css(browser, ".card")
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        shot("phone")
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert browser.switch_to.active_element.get_attribute("class") == "skip"
    finally:
        browser.set_window_size(1280, 900)
