"""The review queue page, end to end in headless Chromium (Debian's chromium + chromedriver).

Reads ``T2IGUARD_TEST_CHROMIUM`` and ``T2IGUARD_TEST_CHROMEDRIVER`` (``.ci/services.sh start``
exports them when the packages are installed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.gateway import LiveGateway, gateway_config, live_gateway

CHROMIUM = os.environ.get("T2IGUARD_TEST_CHROMIUM")
CHROMEDRIVER = os.environ.get("T2IGUARD_TEST_CHROMEDRIVER")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="T2IGUARD_TEST_CHROMIUM/T2IGUARD_TEST_CHROMEDRIVER are not set (run .ci/services.sh start)",
    ),
]


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM or ""
    profile = tempfile.mkdtemp(prefix="t2iguard-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1600",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER or ""))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[LiveGateway]:
    with live_gateway(gateway_config(tmp_path, rate_limit={"enabled": False})) as g:
        yield g


def test_reviewer_sees_blurred_image_and_trace_and_acts(gw: LiveGateway, browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    # a held output (image stored for review) and a held prompt (no image)
    held = httpx.post(
        gw.v1 + "/images/generations",
        json={"prompt": "a quiet harbour"},
        headers={"Authorization": f"Bearer {gw.key(policy='hold')}"},
    ).json()["error"]
    held_prompt = httpx.post(
        gw.v1 + "/images/generations",
        json={"prompt": "a man murdered in an alley"},
        headers={"Authorization": f"Bearer {gw.key(policy='review')}"},
    ).json()["error"]
    assert held["action"] == held_prompt["action"] == "review"
    items = {i["request_id"]: i for i in gw.store.review_items()}
    img_item, text_item = items[held["request_id"]], items[held_prompt["request_id"]]
    reviewer = gw.key("reviewer")

    driver.get(gw.url + "/review")  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, 30)
    # a user key is refused by the API the page calls
    driver.find_element(By.ID, "key").send_keys(gw.key("user"))  # type: ignore[attr-defined]
    driver.find_element(By.ID, "load").click()  # type: ignore[attr-defined]
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "403"))

    key_box = driver.find_element(By.ID, "key")  # type: ignore[attr-defined]
    key_box.clear()
    key_box.send_keys(reviewer)
    driver.find_element(By.ID, "load").click()  # type: ignore[attr-defined]
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "2 item(s)"))
    section = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f"section[data-id='{img_item['id']}']")))
    assert "a quiet harbour" in section.text
    assert "output_image nsfw sexual" in section.find_element(By.CSS_SELECTOR, "pre.trace").text
    img = wait.until(lambda d: section.find_element(By.CSS_SELECTOR, "img[data-testid='image']"))
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img))
    assert "blurred" in img.get_attribute("class")
    assert "blur" in driver.execute_script("return getComputedStyle(arguments[0]).filter", img)  # type: ignore[attr-defined]
    driver.save_screenshot(str(tmp_path / "review-blurred.png"))  # type: ignore[attr-defined]
    img.click()
    assert "blurred" not in (img.get_attribute("class") or "")
    assert driver.execute_script("return getComputedStyle(arguments[0]).filter", img) == "none"  # type: ignore[attr-defined]

    section.find_element(By.CSS_SELECTOR, "input.note").send_keys("confirmed false positive")
    section.find_element(By.CSS_SELECTOR, "button[data-action='approve']").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "approve recorded"))
    other = driver.find_element(By.CSS_SELECTOR, f"section[data-id='{text_item['id']}']")  # type: ignore[attr-defined]
    assert "a man murdered in an alley" in other.text and "no image" in other.text
    other.find_element(By.CSS_SELECTOR, "button[data-action='escalate']").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "escalate recorded"))

    # the actions are recorded, with the reviewer's key and note, and audited as requests
    done = gw.store.review_item(img_item["id"])
    assert done is not None and done["status"] == "approved"
    assert done["actions"][0]["note"] == "confirmed false positive"
    assert done["actions"][0]["by"] == gw.key_id(reviewer)
    esc = gw.store.review_item(text_item["id"])
    assert esc is not None and esc["status"] == "escalated"
    assert any(
        r["endpoint"] == "/review/api/items/{item_id}/action" and r["key_id"] == gw.key_id(reviewer)
        for r in gw.store.audit_records(limit=1000)
    )
    assert len(list(gw.store.export_incidents(mark=False))) == 1
