"""A person's path through the operator console in a real headless Chromium: log in, open a store's
dashboard, start a training run, see the charts. A screenshot is saved to .local/screenshots/."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from recommendations.models import TrainingRun
from tests.conftest import make_tenant
from tests.test_recommendations import CATALOG, planted_events, train

SCREENSHOTS = Path(__file__).resolve().parent.parent / ".local" / "screenshots"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (make test installs them where it can)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1280,1400",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_operator_logs_in_starts_training_and_sees_the_charts(browser, live_server, django_user_model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    def wait_for(condition):  # noqa: ANN001, ANN202 - clicks return before the next page has loaded
        return WebDriverWait(browser, 20).until(condition)

    # given a store with data and a first model, and an operator
    tenant = make_tenant("browser-shop")
    tenant.api.post("/api/v1/products/bulk", CATALOG)
    tenant.api.post("/api/v1/events", planted_events(60))
    train(tenant.store)
    django_user_model.objects.create_superuser("operator", "op@example.com", "a-long-password-1")
    # when the operator logs in
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("a-long-password-1")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(expected_conditions.title_contains("Site administration"))
    # and opens the store's dashboard from the stores list
    browser.get(f"{live_server.url}/admin/tenants/store/")
    browser.find_element(By.LINK_TEXT, "charts and runs").click()
    wait_for(expected_conditions.title_contains("browser-shop: dashboard"))
    # and starts a training run
    browser.find_element(By.CSS_SELECTOR, "input[value='Train now']").click()
    # then it is queued, and the charts are there
    wait_for(expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, ".messagelist"), "queued"))
    assert "queued" in browser.find_element(By.ID, "content").text
    charts = browser.find_elements(By.CSS_SELECTOR, "svg[role=img]")
    assert len(charts) == 5  # events, quality; CTR, conversion and revenue (outcomes)
    assert browser.find_elements(By.CSS_SELECTOR, "svg[role=img] rect")  # events per day bars
    assert browser.find_elements(By.CSS_SELECTOR, "svg[role=img] circle")  # quality per version
    assert TrainingRun.objects.filter(store=tenant.store, trigger="admin", status="queued").exists()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "admin-store-dashboard.png"))
