#!/usr/bin/env python3
"""A screenshot of one job's view in the dashboard (headless chromium, 1280x900):

  screenshot.py DASHBOARD_URL TOKEN_FILE JOB_ID OUT.png

Logs in with the token, opens the job, waits for its curves and its sample grid (when it has
one), and saves the page. docs/dashboard.png was made this way, from a coordinator running the
demo job (deploy/local/demo-job.toml) with `--http-listen`.
"""

import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from chromium import browser


def main():
    url, token_file, job, out = sys.argv[1:5]
    url = url.rstrip("/")
    driver = browser()
    try:
        driver.get(url + "/login")
        driver.find_element(By.ID, "token").send_keys(open(token_file).read().strip())
        driver.find_element(By.ID, "login-submit").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr"))
        driver.get(f"{url}/#/jobs/{job}")
        WebDriverWait(driver, 60).until(
            lambda d: int(d.find_element(By.CSS_SELECTOR, "#loss-chart svg").get_attribute("data-points") or 0) > 0)
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "const i = document.getElementById('sample-img');"
            "return i.hidden || (i.complete && i.naturalWidth > 0);"))
        driver.save_screenshot(out)
        print(out)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
