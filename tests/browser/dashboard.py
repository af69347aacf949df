#!/usr/bin/env python3
"""The coordinator's dashboard in a real headless browser (Debian's chromium and chromedriver,
driven by selenium), against a real coordinator and worker started by the Rust test
(tests/tests/observability.rs), which passes:

  GANTRY_DASHBOARD       the dashboard's URL (http://127.0.0.1:PORT/)
  GANTRY_TOKEN_FILE      the job API token
  GANTRY_COORDINATOR     the gRPC address, for `coordinator cancel`
  GANTRY_COORDINATOR_BIN the coordinator binary
  GANTRY_LONG_JOB        a job that runs until cancelled
  GANTRY_SHORT_JOB       a job queued behind it, which succeeds once the long one is cancelled
  GANTRY_SCREENSHOT      where to save a screenshot of the short job's view (PNG)

Every wait is on a condition the page shows (WebDriverWait), bounded by a deadline: no sleeps.
Prints one line per check; exits non-zero on the first that fails.
"""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from chromium import browser

URL = os.environ["GANTRY_DASHBOARD"].rstrip("/")
TOKEN = open(os.environ["GANTRY_TOKEN_FILE"]).read().strip()
LONG = os.environ["GANTRY_LONG_JOB"]
SHORT = os.environ["GANTRY_SHORT_JOB"]
SCREENSHOT = os.environ["GANTRY_SCREENSHOT"]
# Deadlines, not pauses: CPU training on a busy 2-core machine can be slow.
LIMIT = float(os.environ.get("GANTRY_BROWSER_LIMIT", "120"))

started = time.monotonic()


def say(message):
    print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)


def status_of(path, headers=None):
    """The HTTP status of GET path, without the browser's cookie."""
    request = urllib.request.Request(URL + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def text(driver, css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else None


def attr(driver, css, name):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].get_attribute(name) if found else None


def wait(driver, what, condition, limit=LIMIT):
    """Waits until condition(driver) is truthy; fails naming `what` and the page's state."""
    # An element read while the page navigates (a form posted) may go stale: asked again.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        value = WebDriverWait(driver, limit, poll_frequency=0.1, ignored_exceptions=ignored).until(
            lambda d: condition(d))
    except Exception as e:
        state = text(driver, "#job-state"), attr(driver, "#job-step", "data-step"), text(driver, "#job-reason")
        driver.save_screenshot(SCREENSHOT + ".failed.png")
        raise SystemExit(f"gave up after {limit} s waiting for: {what} ({type(e).__name__}: {e})\n"
                         f"  url {driver.current_url}\n"
                         f"  job view (state, step, reason) {state}\n  screenshot {SCREENSHOT}.failed.png")
    say(what)
    return value


def main():
    # Nothing readable without logging in.
    assert status_of("/api/jobs") == 401, status_of("/api/jobs")
    assert status_of(f"/api/jobs/{LONG}") == 401
    assert status_of("/api/events") == 401
    assert status_of("/assets/app.js") == 401
    assert status_of("/metrics") == 401
    assert status_of("/api/jobs", {"Cookie": "gantry_session=" + "0" * 64}) == 401
    assert status_of("/metrics", {"Authorization": "Bearer " + TOKEN}) == 200
    say("the API, the page's script, its events and /metrics refuse requests without the token")

    driver = browser()
    try:
        driver.get(URL + "/")
        wait(driver, "the page sends a visitor without a session to the login form",
             lambda d: d.current_url.endswith("/login") and d.find_elements(By.ID, "token"))

        driver.find_element(By.ID, "token").send_keys("not-the-token")
        driver.find_element(By.ID, "login-submit").click()
        wait(driver, "a wrong token is refused", lambda d: text(d, "#login-error") == "Wrong token.")
        assert not driver.get_cookies(), driver.get_cookies()

        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "login-submit").click()
        wait(driver, "the token logs in: the jobs table lists both jobs",
             lambda d: d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job-id="{LONG}"]')
             and d.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job-id="{SHORT}"]'))
        cookie = driver.get_cookie("gantry_session")
        assert cookie and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", cookie
        wait(driver, "the workers table shows the worker running the long job",
             lambda d: any(LONG in row.text for row in d.find_elements(By.CSS_SELECTOR, "#workers tbody tr")))

        # The long job, live.
        driver.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job-id="{LONG}"] a').click()
        wait(driver, f"{LONG}'s view shows it RUNNING",
             lambda d: attr(d, "#job-view", "data-job-id") == LONG and attr(d, "#job-state", "data-state") == "RUNNING")
        first = wait(driver, "its step is shown", lambda d: int(attr(d, "#job-step", "data-step") or 0) or None)
        second = wait(driver, f"its step advances past {first}",
                      lambda d: (lambda s: s if s > first else None)(int(attr(d, "#job-step", "data-step"))))
        wait(driver, f"and again past {second}", lambda d: int(attr(d, "#job-step", "data-step")) > second)
        wait(driver, "its loss curves are drawn from live steps",
             lambda d: int(attr(d, "#loss-chart svg", "data-points") or 0) >= 2
             and len(d.find_elements(By.CSS_SELECTOR, "#loss-chart path.series")) == 4)
        wait(driver, "its ranks name the worker",
             lambda d: d.find_elements(By.CSS_SELECTOR, '#ranks tr[data-rank="0"]')
             and "cpu" in d.find_element(By.CSS_SELECTOR, '#ranks tr[data-rank="0"]').text)

        cancel = subprocess.run(
            [os.environ["GANTRY_COORDINATOR_BIN"], "cancel", LONG, "--reason", "browser test",
             "--coordinator", os.environ["GANTRY_COORDINATOR"], "--token-file", os.environ["GANTRY_TOKEN_FILE"]],
            capture_output=True, text=True)
        assert cancel.returncode == 0, cancel
        say(f"cancelled {LONG} through the job API")
        wait(driver, f"{LONG}'s view shows it CANCELLED",
             lambda d: attr(d, "#job-state", "data-state") == "CANCELLED")
        wait(driver, "with the reason", lambda d: "browser test" in (text(d, "#job-reason") or ""))

        # The short job runs next, on the same worker, and succeeds.
        driver.find_element(By.CSS_SELECTOR, "a.back").click()
        wait(driver, f"the jobs table shows {LONG} CANCELLED",
             lambda d: attr(d, f'#jobs tr[data-job-id="{LONG}"]', "data-state") == "CANCELLED")
        wait(driver, f"and {SHORT} SUCCEEDED",
             lambda d: attr(d, f'#jobs tr[data-job-id="{SHORT}"]', "data-state") == "SUCCEEDED")
        driver.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job-id="{SHORT}"] a').click()
        wait(driver, f"{SHORT}'s view shows it SUCCEEDED",
             lambda d: attr(d, "#job-view", "data-job-id") == SHORT and attr(d, "#job-state", "data-state") == "SUCCEEDED")
        steps = wait(driver, "at its last step",
                     lambda d: (lambda s: s if s > 0 and text(d, "#job-step").endswith(f"/ {s}") else None)(
                         int(attr(d, "#job-step", "data-step") or 0)))
        wait(driver, "its sample grid image is loaded from storage",
             lambda d: d.execute_script(
                 "const i = document.getElementById('sample-img');"
                 "return !i.hidden && i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0;"))
        assert attr(driver, "#sample-img", "data-step") == str(steps), attr(driver, "#sample-img", "data-step")
        wait(driver, f"its loss curves hold its {steps} steps (from metrics.jsonl)",
             lambda d: int(attr(d, "#loss-chart svg", "data-points") or 0) == steps)
        driver.save_screenshot(SCREENSHOT)
        say(f"screenshot {SCREENSHOT}")

        driver.find_element(By.ID, "logout").click()
        wait(driver, "logging out returns to the login form", lambda d: d.current_url.endswith("/login"))
        driver.get(URL + "/")
        wait(driver, "and the page is closed again", lambda d: d.current_url.endswith("/login"))
    finally:
        driver.quit()
    say("dashboard OK")


if __name__ == "__main__":
    sys.exit(main())
