"""The console in a real headless Chromium against the real service (bundled model, LFW photos):
enrol two people through the page (file picker and drag-and-drop), identify one of them from another
photo through the page, and check what the page says and shows. A few page loads only: Chromium is
CPU-heavy on a 2-core machine.

``LRFACE_CONSOLE_SCREENSHOTS=DIR`` keeps the screenshots in DIR (the README's comes from here)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser import chromium
from tests.faces import lfw_faces
from tests.server import running_server

ADMIN, READER = "browser-admin", "browser-reader"
ENROLLED = ("Colin_Powell", "George_W_Bush")
VIEWPORT = {"width": 1280, "height": 860}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from lrface.settings import BUNDLED_MODEL_DIR

    env = {
        "LRFACE_MODEL": str(BUNDLED_MODEL_DIR),
        "LRFACE_GALLERY_DIR": str(tmp_path_factory.mktemp("gallery")),
        "LRFACE_API_KEYS": f"{ADMIN}:admin,{READER}:read",
    }
    with running_server(env) as server_url:
        yield server_url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield page
    context.close()
    assert errors == [], errors  # no script error, nothing the pages' CSP had to block


def _screenshot_dir(tmp_path: Path) -> Path:
    named = os.environ.get("LRFACE_CONSOLE_SCREENSHOTS")
    folder = Path(named) if named else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _frame(tmp_path: Path) -> Path:
    """A 1024x576 'frame': another photo of Colin Powell large, one of George W Bush small (a face of
    about 50 px) and a person nobody enrolled (Hugo Chavez) at about 20 px, a face for the student."""
    frame = Image.new("RGB", (1024, 576), (92, 104, 118))
    placements = (("Colin_Powell", 1, 300, (60, 140)), ("George_W_Bush", 1, 110, (560, 300)),
                  ("Hugo_Chavez", 0, 56, (820, 200)))  # fmt: skip
    for name, index, side, where in placements:
        photo = Image.open(lfw_faces(name, index + 1)[index]).convert("RGB")
        photo = photo.resize((side, side), Image.Resampling.LANCZOS)
        frame.paste(photo, where)
    path = tmp_path / "frame.jpg"
    frame.save(path, quality=92)
    return path


def _drop(page: Any, selector: str, path: Path) -> None:
    """Drag-and-drop of a file onto ``selector``, as the browser delivers it (a DataTransfer)."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            return transfer;
        }""",
        [data, path.name],
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def _use_key(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def test_enrol_two_people_and_identify_one_through_the_page(page: Any, url: str, tmp_path: Path) -> None:
    powell, bush = (lfw_faces(name, 1)[0] for name in ENROLLED)
    page.goto(url + "/")
    _use_key(page, ADMIN)
    page.fill("#new-subject", "Colin_Powell")
    page.set_input_files("#enrol-files", str(powell))  # the file picker
    page.wait_for_selector("[data-subject-id=Colin_Powell] .thumb img[src^='blob:']")
    page.fill("#new-subject", "George_W_Bush")
    _drop(page, "#enrol-drop", bush)  # drag-and-drop
    page.wait_for_selector("[data-subject-id=George_W_Bush] .thumb img[src^='blob:']")
    assert page.inner_text("#enrol-result") == "Enrolled 1 face(s) of George_W_Bush."
    assert page.inner_text("#gallery-count") == "2 subjects"
    thumbnail = page.eval_on_selector("[data-subject-id=Colin_Powell] .thumb img", "img => img.naturalWidth")
    assert thumbnail == 150  # the stored HR chip

    # The key was entered once: the next page sends it without asking.
    page.goto(url + "/console/identify")
    assert page.input_value("#api-key") == ADMIN
    frame = _frame(tmp_path)
    with page.expect_response(lambda r: r.url.endswith("/identify") and r.status == 200) as answered:
        page.set_input_files("#probe-file", str(frame))
    answer = answered.value.json()
    page.wait_for_selector("#result .face")
    first = page.inner_text("#result .face >> nth=0")
    assert "Face 1: Colin_Powell" in first and "match: Colin_Powell scores" in first
    assert "frame.jpg" in page.inner_text("#status")
    faces = answer.get("faces")
    if faces is not None:  # a service that lists every face: each one boxed, each shown as the model saw it
        assert page.locator("#boxes rect.face-box").count() == len([f for f in faces if f["box"]])
        assert page.locator("#result img.pixelated").count() == len([f for f in faces if f.get("input_png")])
        assert page.locator("#result img.pixelated").count() == len(faces)
    shot = _screenshot_dir(tmp_path) / "console-identify.png"
    page.screenshot(path=str(shot), full_page=True)
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[1] == VIEWPORT["width"] and image.shape[0] >= VIEWPORT["height"]
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 5000  # a rendered photo, not blank

    # The threshold slider re-decides in the page: above Powell's score he is unknown, reset brings him back.
    slider = page.locator(".thresholds input[type=range]").first
    slider.fill("1")
    assert "Face 1: unknown" in page.inner_text("#result .face >> nth=0")
    assert "no match: Colin_Powell" in page.inner_text("#result .face >> nth=0")
    page.click(".thresholds .slider button >> nth=0")
    assert "Face 1: Colin_Powell" in page.inner_text("#result .face >> nth=0")

    # A stricter operating point: the service decides each face at its kind's FPIR-1% threshold, the slider says so.
    page.select_option("#operating-point", "fpir_1")
    with page.expect_response(lambda r: r.url.endswith("/identify") and r.status == 200) as answered:
        page.set_input_files("#probe-file", str(frame))
    strict = answered.value.json()
    if "operating_point" in strict:  # a service that has operating points
        assert strict["operating_point"] in ("fpir_1", "best_accuracy") and strict["threshold"] >= answer["threshold"]
        if strict["operating_point"] == "fpir_1":
            page.wait_for_function("document.querySelector('.thresholds').innerText.includes('FPIR 1%')")


def test_keys_are_asked_for_and_scopes_explained(page: Any, url: str) -> None:
    blair = lfw_faces("Tony_Blair", 1)[0]  # (skips without LFW: the gallery below is the first test's people)
    page.goto(url + "/console/model")
    page.wait_for_selector("#notice:not([hidden])")
    assert "needs an API key" in page.inner_text("#notice")
    _use_key(page, READER)
    page.wait_for_selector("#accuracy-table td")
    from lrface.model_card import load_card
    from lrface.settings import BUNDLED_MODEL_DIR

    card = load_card(BUNDLED_MODEL_DIR)  # the page shows the served card, whichever release it is
    assert page.inner_text("#model-title") == f"{card.name} {card.version}"
    assert card.routing is not None
    assert f"{card.routing.threshold:.3f}" in page.inner_text("#thresholds-table")
    assert f"{card.routing.chip_switch:g} px" in page.inner_text("#routing")

    page.goto(url + "/")  # a read key sees the gallery but may not change it
    page.wait_for_selector("#subjects[data-state=ready]")
    page.fill("#new-subject", "Tony_Blair")
    page.set_input_files("#enrol-files", str(blair))
    page.wait_for_selector("#notice.error")
    assert "may not do this" in page.inner_text("#notice") and "scope admin" in page.inner_text("#notice")
    assert page.locator("[data-subject-id=Tony_Blair]").count() == 0


def test_faces_and_subjects_are_deleted_through_the_page(page: Any, url: str) -> None:
    page.goto(url + "/")
    _use_key(page, ADMIN)
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete ...? This cannot be undone."
    page.fill("#new-subject", "Ariel_Sharon")
    page.set_input_files("#enrol-files", [str(p) for p in lfw_faces("Ariel_Sharon", 2)])
    page.wait_for_selector("[data-subject-id=Ariel_Sharon] .thumb >> nth=1")
    page.click("[data-subject-id=Ariel_Sharon] .thumb >> nth=0 >> .delete-face")
    page.wait_for_selector("#notice.info >> text=Deleted face")
    page.wait_for_selector("#subjects[data-state=ready]")
    page.wait_for_selector("[data-subject-id=Ariel_Sharon] .thumb")
    assert page.locator("[data-subject-id=Ariel_Sharon] .thumb").count() == 1
    assert page.inner_text("[data-subject-id=Ariel_Sharon] .count") == "1 face"
    page.click("[data-subject-id=Ariel_Sharon] .delete-subject")
    page.wait_for_selector("#notice.info >> text=Deleted Ariel_Sharon")
    page.wait_for_selector("#subjects[data-state=ready]")
    assert page.locator("[data-subject-id=Ariel_Sharon]").count() == 0


def test_a_gallery_is_created_filled_searched_and_deleted_in_the_pages(page: Any, url: str, tmp_path: Path) -> None:
    """A newcomer's flow in a gallery of its own: create it on the gallery page, enrol two people into it
    (picker and drag-and-drop), identify one of them there from the identify page (the gallery chosen is
    kept), then delete the gallery."""
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(url + "/")
    _use_key(page, ADMIN)
    page.wait_for_selector("#gallery-select[data-state=ready]")
    page.fill("#new-gallery", "visitors")
    page.click("#create-gallery")
    page.wait_for_selector("#notice.info >> text=Created gallery visitors")
    page.wait_for_selector("#subjects[data-state=ready]", state="attached")
    assert page.input_value("#gallery-select") == "visitors"
    assert page.inner_text("#gallery-count") == "0 subjects"

    page.goto(url + "/console/identify")  # an empty gallery: nobody to compare with, whatever 'default' holds
    page.wait_for_selector("#gallery-select[data-state=ready]", state="attached")
    assert page.input_value("#gallery-select") == "visitors"
    probe = lfw_faces("Colin_Powell", 2)[1]
    with page.expect_response(lambda r: r.url.endswith("/identify") and r.status == 200):
        page.set_input_files("#probe-file", str(probe))
    page.wait_for_selector("#result .face")
    assert "Face 1: unknown" in page.inner_text("#result .face >> nth=0")
    assert "Searched gallery visitors" in page.inner_text("#status")

    page.goto(url + "/")
    page.wait_for_selector("#subjects[data-state=ready]", state="attached")
    powell, bush = (lfw_faces(name, 1)[0] for name in ENROLLED)
    page.fill("#new-subject", "Colin_Powell")
    page.set_input_files("#enrol-files", str(powell))
    page.wait_for_selector("[data-subject-id=Colin_Powell] .thumb img[src^='blob:']")
    page.fill("#new-subject", "George_W_Bush")
    _drop(page, "#enrol-drop", bush)
    page.wait_for_selector("[data-subject-id=George_W_Bush] .thumb img[src^='blob:']")
    assert page.inner_text("#enrol-result") == "Enrolled 1 face(s) of George_W_Bush in gallery visitors."
    assert page.inner_text("#gallery-count") == "2 subjects"

    page.goto(url + "/console/identify")
    with page.expect_response(lambda r: r.url.endswith("/identify") and r.status == 200):
        page.set_input_files("#probe-file", str(_frame(tmp_path)))
    page.wait_for_selector("#result .face")
    assert "Face 1: Colin_Powell" in page.inner_text("#result .face >> nth=0")

    page.goto(url + "/")
    page.wait_for_selector("#subjects[data-state=ready]", state="attached")
    page.click("#delete-gallery")
    page.wait_for_selector("#notice.info >> text=Deleted gallery visitors")
    page.wait_for_selector("#subjects[data-state=ready]", state="attached")
    assert page.input_value("#gallery-select") == "default"
    assert "visitors" not in page.inner_text("#gallery-select")


def test_a_late_answer_for_the_gallery_left_is_not_shown_under_the_one_chosen(page: Any, url: str) -> None:
    """The subjects of the gallery left arrive after another was chosen: they are dropped, never shown
    (their delete buttons would have acted on the gallery chosen)."""
    import re

    import httpx

    headers = {"X-API-Key": ADMIN}
    for name in ("slow", "quick"):
        assert httpx.put(f"{url}/galleries/{name}", headers=headers, timeout=30).status_code in (200, 201)
    photo = lfw_faces("Colin_Powell", 1)[0]
    files = {"images": (photo.name, photo.read_bytes())}
    made = httpx.post(f"{url}/galleries/slow/subjects/Slow_Only/faces", files=files, headers=headers, timeout=60)
    assert made.status_code == 201, made.text
    page.goto(url + "/")
    _use_key(page, ADMIN)
    page.wait_for_selector("#gallery-select[data-state=ready]")
    page.select_option("#gallery-select", "slow")
    page.wait_for_selector("[data-subject-id=Slow_Only]")
    held: list[Any] = []
    page.route(re.compile(r"/galleries/slow/subjects\?"), lambda route: held.append(route))  # 'slow' listed: held
    page.click("#refresh")
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the page did not list 'slow' again"
    page.select_option("#gallery-select", "quick")
    page.wait_for_selector("#subjects[data-state=ready]", state="attached")
    assert page.inner_text("#gallery-count") == "0 subjects"
    with page.expect_response(lambda r: "/galleries/slow/subjects?" in r.url):
        held[0].continue_()
    page.wait_for_timeout(300)
    assert page.locator("[data-subject-id=Slow_Only]").count() == 0
    assert page.inner_text("#gallery-count") == "0 subjects"
    for name in ("slow", "quick"):
        assert httpx.delete(f"{url}/galleries/{name}", headers=headers, timeout=30).status_code == 200
