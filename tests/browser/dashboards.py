#!/usr/bin/env python3
"""The tenant portal (/portal) and the operator console (/console) in a real browser.

Starts the built `tenantry` binary on a free port with a temporary data dir, the test clock and a known
operator token; creates tenants over HTTP; then drives headless chromium (Debian's `chromium` and
`chromium-driver`) through both pages: signing in, reading quotas, usage, documents, keys and invoices,
uploading and deleting a document, creating and revoking a key, changing plan, the console's counts, funnel,
revenue, dunning and integration health, a tenant's lifecycle events and nudge notification, and hostile
tenant names that must render as text. Usage:

    target/browser-venv/bin/python tests/browser/dashboards.py target/debug/tenantry

With TENANTRY_SCREENSHOTS=DIR set, the portal and the console are saved there as PNG files.
"""
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BINARY = None
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# axe-core from npm (tests/browser/package.json, installed by scripts/test.sh), injected into the pages.
AXE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_modules", "axe-core", "axe.min.js")
OPERATOR_TOKEN = "console-test-token-5f1c"
HOUR = 3600
HOSTILE = '<script>window.pwned=1;alert("script")</script><img src=x onerror="window.pwned=2;alert(1)">'
STATES = ["pending_payment", "provisioning", "trialing", "active", "past_due", "suspended", "cancelled", "erased"]
PORTAL_PASSWORD = "correct horse battery staple"
FUNNEL = ["signed_up", "provisioned", "first_document", "first_query", "activated"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def money(cents, currency="usd"):
    """As the pages format it (common.js `money`)."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100:,}.{cents % 100:02d} {currency.upper()}"


class Http:
    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None, token=None, headers=None):
        headers = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        if token:
            headers["Authorization"] = "Bearer " + token
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def ok(self, method, path, body=None, token=None):
        status, data = self.call(method, path, body, token)
        if status >= 300:
            raise AssertionError(f"{method} {path} answered {status}: {data}")
        return data

    def op(self, method, path, body=None):
        return self.ok(method, path, body, OPERATOR_TOKEN)

    def signup(self, email, organization, plan):
        return self.ok("POST", "/v1/signup", {"email": email, "organization": organization, "plan": plan})


class Dashboards(unittest.TestCase):
    """One story, in order: the test methods share the server, the tenants and the browser."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="tenantry-browser-")
        config = os.path.join(cls.tmp, "tenantry.toml")
        with open(config, "w") as f:
            f.write(f'[server]\noperator_token = "{OPERATOR_TOKEN}"\nclock = "test"\n')
        port = free_port()
        cls.base = f"http://127.0.0.1:{port}"
        cls.http = Http(cls.base)
        cls.log = open(os.path.join(cls.tmp, "server.log"), "w")
        cls.proc = subprocess.Popen(
            [BINARY, "serve", "--config", config, "--data-dir", os.path.join(cls.tmp, "data"),
             "--bind", f"127.0.0.1:{port}"],
            stdout=cls.log, stderr=subprocess.STDOUT)
        for _ in range(150):
            try:
                urllib.request.urlopen(cls.base + "/healthz", timeout=2)
                break
            except Exception:
                time.sleep(0.2)
        else:
            raise RuntimeError("tenantry did not start; see " + cls.log.name)

        h = cls.http
        # The portal's tenant: on a paid plan in its trial, with a document and a question already.
        cls.portal = h.signup("portal@browser.test", "Portal Org", "starter")
        h.ok("PUT", "/v1/tenant/password", {"password": PORTAL_PASSWORD}, cls.portal["api_key"])
        h.ok("POST", "/v1/documents", {"title": "Handbook", "text": "Refunds are issued within 14 days."},
             cls.portal["api_key"])
        h.ok("POST", "/v1/query", {"question": "How long do refunds take?"}, cls.portal["api_key"])
        # For the console: one activated, one idle (to be nudged), one with a hostile name, one paid signup.
        cls.active = h.signup("active@browser.test", "Active Org", "trial")
        h.ok("POST", "/v1/documents", {"title": "Travel", "text": "Economy class for short flights."},
             cls.active["api_key"])
        h.ok("POST", "/v1/query", {"question": "Which class for short flights?"}, cls.active["api_key"])
        cls.idle = h.signup("idle@browser.test", "Idle Org", "trial")
        cls.hostile = h.signup("hostile@browser.test", HOSTILE, "trial")
        cls.paid = h.signup("paid@browser.test", "Paid Org", "pro")

        options = webdriver.ChromeOptions()
        for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2400"]:
            options.add_argument(arg)
        if shutil.which("chromium"):
            options.binary_location = shutil.which("chromium")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        cls.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        cls.driver.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls):
        driver = getattr(cls, "driver", None)
        if driver:
            driver.quit()
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.log.close()

    # ---- helpers -------------------------------------------------------------------------------------

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        return self.find(css).text

    def wait(self, what, condition, timeout=10):
        try:
            return WebDriverWait(self.driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: condition())
        except TimeoutException:
            self.fail(f"timed out waiting for {what}")

    def wait_text(self, css, expected, timeout=10):
        def seen():
            found = self.finds(css)
            return found and found[0].text == expected
        try:
            WebDriverWait(self.driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(
                lambda d: seen())
        except TimeoutException:
            actual = [e.text for e in self.finds(css)]
            self.fail(f"{css}: expected {expected!r}, found {actual!r}")

    def column(self, body_id, index):
        """The text of one column of a table body, read in one step (the scripts re-render tables)."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]), r => r.cells[arguments[1]].innerText)",
            f"#{body_id} tr:not(.empty)", index)

    def open(self, path):
        self.driver.get(self.base + path)
        self.wait("the page's script", lambda: not self.find("#sign-in").get_attribute("hidden")
                  or not self.find("#app").get_attribute("hidden"))

    def sign_in(self, field, secret):
        """Types `secret` into `field` of the sign-in form it belongs to and submits that form (the portal's API
        key form is folded in a <details>, opened first)."""
        box = self.find(field)
        if not box.is_displayed():
            self.find("#sign-in details summary").click()
        box.clear()
        box.send_keys(secret)
        box.find_element(By.XPATH, "./ancestor::form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def sign_in_with_password(self, email, password):
        for css, value in [("#sign-in-email", email), ("#sign-in-password", password)]:
            self.find(css).clear()
            self.find(css).send_keys(value)
        self.find("#sign-in-form button[type=submit]").click()

    def assert_signed_in(self):
        self.wait("the signed-in view", lambda: self.find("#app").is_displayed())
        self.assertFalse(self.find("#error").is_displayed(), self.find("#error").text)

    def assert_error_shown(self, *fragments):
        self.wait("the error area", lambda: self.find("#error").is_displayed())
        message = self.find("#error").text
        for fragment in fragments:
            self.assertIn(fragment, message)

    def assert_no_alert(self):
        try:
            alert = self.driver.switch_to.alert
            text = alert.text
            alert.dismiss()
            self.fail(f"an alert opened: {text!r}")
        except NoAlertPresentException:
            pass
        self.assertIsNone(self.driver.execute_script("return window.pwned"), "injected script ran")

    def assert_clean_console(self):
        """No script errors and no Content-Security-Policy violations were logged by the page."""
        problems = [e["message"] for e in self.driver.get_log("browser")
                    if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
                    and "the server responded with a status of 4" not in e["message"]]
        self.assertEqual(problems, [])

    def screenshot(self, name):
        folder = os.environ.get("TENANTRY_SCREENSHOTS")
        if folder:
            os.makedirs(folder, exist_ok=True)
            self.driver.save_screenshot(os.path.join(folder, name + ".png"))

    def go(self, section):
        """Opens a portal section from the navigation bar."""
        self.find(f'#nav a[data-section="{section}"]').click()
        self.wait(f"the {section} section", lambda: self.find(f'[data-page="{section}"]').is_displayed())
        self.assertEqual(self.find(f'#nav a[data-section="{section}"]').get_attribute("aria-current"), "page")

    def click_fresh(self, css):
        """Clicks `css`, finding it again should the page re-render it meanwhile (tables reload on input)."""
        def attempt():
            try:
                self.find(css).click()
                return True
            except StaleElementReferenceException:
                return False
        self.wait(css, attempt)

    def accept_confirmation(self, *fragments):
        """Accepts the confirmation the page asked for, after checking what it says."""
        self.wait("a confirmation", lambda: self._alert_open())
        alert = self.driver.switch_to.alert
        for fragment in fragments:
            self.assertIn(fragment, alert.text)
        alert.accept()

    def _alert_open(self):
        try:
            self.driver.switch_to.alert
            return True
        except NoAlertPresentException:
            return False

    def assert_fits(self, width):
        """At `width` CSS pixels nothing makes the page scroll sideways (the viewport of a phone, emulated)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": 800, "deviceScaleFactor": 2, "mobile": True})
        overflow = self.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        if overflow > 0:
            wide = self.driver.execute_script(
                "const w = document.documentElement.clientWidth;"
                "return Array.from(document.querySelectorAll('body *'))"
                ".filter(e => e.getBoundingClientRect().right > w && e.offsetParent !== null)"
                ".slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))")
            self.fail(f"the page is {overflow} px wider than {width} px: {wide}")

    def assert_accessible(self, what):
        """axe-core finds no serious or critical WCAG 2.1 A/AA violation in the page as it is now."""
        with open(AXE) as f:
            self.driver.execute_script(f.read())
        self.driver.set_script_timeout(60)
        violations = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
            ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
            "  nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))))"
            ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]))")
        serious = [v for v in violations if v["impact"] in ("serious", "critical")]
        self.assertEqual(serious, [], f"accessibility of {what}")

    def assert_fits_desktop(self):
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        overflow = self.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        self.assertLessEqual(overflow, 0, "the page is wider than the window")

    def assert_nothing_stored(self):
        """No credential in the browser's storage and none a script can read: the session is an HttpOnly
        cookie."""
        stored = self.driver.execute_script(
            "return [sessionStorage.length, localStorage.length, document.cookie]")
        self.assertEqual(stored, [0, 0, ""], "nothing in sessionStorage, localStorage or script-visible cookies")

    def session_cookies(self):
        """The cookies the browser holds for the service, as the DevTools protocol reports them."""
        return {c["name"]: c for c in self.driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]}

    def sign_out_everywhere(self):
        self.driver.delete_all_cookies()

    # ---- the portal ----------------------------------------------------------------------------------

    def test_01_portal_refuses_a_wrong_key_visibly(self):
        self.open("/portal")
        self.assertTrue(self.find("#sign-in").is_displayed())
        self.assertFalse(self.find("#app").is_displayed())
        self.assert_accessible("the portal's sign-in")
        self.screenshot("portal-sign-in")
        self.sign_in_with_password("portal@browser.test", "not the password at all")
        self.assert_error_shown("Unauthenticated", "email or the password is wrong")
        self.sign_in("#api-key", "tk_0123456789abcdef0123456789abcdef_not-a-real-secret")
        self.assert_error_shown("Unauthenticated")
        self.assertFalse(self.find("#app").is_displayed(), "the portal opened with a wrong key")
        self.assert_nothing_stored()
        self.assertEqual(self.session_cookies(), {}, "a refused sign-in opens no session")

    def test_02_portal_shows_account_quotas_usage_and_documents(self):
        self.open("/portal")
        self.sign_in_with_password("portal@browser.test", PORTAL_PASSWORD)
        self.assert_signed_in()
        self.wait_text("#organization", "Portal Org")
        self.assertEqual(self.text("#plan"), "starter")
        self.assertEqual(self.text("#state"), "trialing")
        self.assertEqual(self.text("#tenant-id"), self.portal["tenant_id"])
        # The browser keeps a session, not a credential: an HttpOnly, Secure, SameSite=Strict cookie that no
        # script can read.
        self.assert_nothing_stored()
        cookie = self.session_cookies()["tenantry_portal"]
        self.assertEqual((cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]),
                         (True, True, "Strict", "/"))
        self.assertNotIn(self.portal["api_key"], self.driver.page_source)
        type(self).portal_cookie = cookie["value"]

        quotas = self.http.ok("GET", "/v1/quotas", token=self.portal["api_key"])
        self.wait_text("#quota-rows [data-meter=documents]", "1")
        self.assertEqual(self.text("#quota-rows [data-meter=queries]"), "1")
        limits = self.column("quota-rows", 2)
        self.assertEqual(limits[0], f"{quotas['limits']['queries']:,}")
        self.assertEqual(len(self.finds("#quota-rows progress")), 4)
        self.assertEqual(self.find("#quota-rows progress").get_attribute("value"), "1")

        usage = self.http.ok("GET", "/v1/usage", token=self.portal["api_key"])
        self.assertEqual(self.text("#usage-rows [data-meter=queries]"), "1")
        self.assertEqual(self.text("#usage-rows [data-meter=prompt_tokens]"),
                         f"{usage['totals']['prompt_tokens']:,}")
        self.assertEqual(len(self.finds("#usage-chart rect.chart-bar")), 4, "one bar per quota")
        widths = [int(b.get_attribute("width")) for b in self.finds("#usage-chart rect.chart-bar")]
        self.assertTrue(all(w > 0 for w in widths), f"every quota in use has a visible bar: {widths}")
        self.assertEqual(self.column("model-rows", 0), list(usage["by_model"].keys()))

        # Usage over time: the day's column holds the one query, and the table says the same.
        self.wait("the usage history", lambda: self.finds("#history-chart rect.chart-bar"))
        values = [int(b.get_attribute("data-value")) for b in self.finds("#history-chart rect.chart-bar")]
        self.assertEqual(sum(values), 1, values)
        self.find("#history-meter option[value=prompt_tokens]").click()
        self.wait("the prompt tokens history", lambda: sum(
            int(b.get_attribute("data-value")) for b in self.finds("#history-chart rect.chart-bar"))
            == usage["totals"]["prompt_tokens"])

        self.go("documents")
        self.assertEqual(self.driver.current_url, self.base + "/portal/documents")
        self.assertEqual(self.column("document-rows", 0), ["Handbook"])
        self.assert_clean_console()

    def test_03_portal_uploads_files_each_with_its_outcome_and_deletes_with_confirmation(self):
        good = os.path.join(self.tmp, "onboarding.md")
        with open(good, "w") as f:
            f.write("# Onboarding\n\nNew starters get a laptop on their first day.\n")
        bad = os.path.join(self.tmp, "payload.exe")
        with open(bad, "wb") as f:
            f.write(b"MZ\x90\x00 not a document")
        self.find("#doc-file").send_keys(good + "\n" + bad)
        self.find("#upload-form button[type=submit]").click()
        self.wait("both outcomes", lambda: len(self.finds("#upload-status .upload-done, #upload-status .upload-failed")) == 2)
        self.assertTrue(self.text("#upload-status .upload-done").startswith("onboarding.md: "))
        self.assertIn("payload.exe: Unsupported", self.text("#upload-status .upload-failed"))
        # A Markdown file is titled by its first heading.
        self.wait("the uploaded document", lambda: "Onboarding" in self.column("document-rows", 0))
        docs = self.http.ok("GET", "/v1/documents", token=self.portal["api_key"])["documents"]
        mine = [d for d in docs if d["title"] == "Onboarding"]
        self.assertEqual(len(mine), 1, docs)
        self.assertEqual(mine[0]["content_type"], "text/markdown")

        # Search narrows the list by title.
        self.find("#doc-search").send_keys("hand")
        self.wait("the search", lambda: self.column("document-rows", 0) == ["Handbook"])
        self.find("#doc-search").clear()
        self.find("#doc-search").send_keys("x")
        self.find("#doc-search").send_keys("\b")
        self.wait("the whole list", lambda: len(self.column("document-rows", 0)) == 2)

        # Deleting asks first: dismissing keeps the document.
        self.find(f'button[data-document="{mine[0]["document_id"]}"]').click()
        self.wait("a confirmation", lambda: self._alert_open())
        self.driver.switch_to.alert.dismiss()
        self.assertEqual(len(self.http.ok("GET", "/v1/documents", token=self.portal["api_key"])["documents"]), 2)
        self.find(f'button[data-document="{mine[0]["document_id"]}"]').click()
        self.accept_confirmation("Onboarding")
        self.wait("the deleted document to go", lambda: self.column("document-rows", 0) == ["Handbook"])
        docs = self.http.ok("GET", "/v1/documents", token=self.portal["api_key"])["documents"]
        self.assertEqual([d["title"] for d in docs], ["Handbook"])
        self.go("overview")
        self.wait_text("#quota-rows [data-meter=documents]", "1")

    def test_04_portal_creates_a_key_shown_once_and_revokes_it(self):
        self.go("keys")
        self.assertFalse(self.find("#new-key").is_displayed())
        self.find("#key-name").send_keys("ci")
        self.find("#key-form button[type=submit]").click()
        self.wait("the new key", lambda: self.find("#new-key").is_displayed())
        plaintext = self.text("#new-key-value")
        self.assertTrue(plaintext.startswith("tk_"), plaintext)
        status, tenant = self.http.call("GET", "/v1/tenant", token=plaintext)
        self.assertEqual((status, tenant["tenant_id"]), (200, self.portal["tenant_id"]), "the shown key works")
        self.wait("the key in the list", lambda: "ci" in self.column("key-rows", 0))

        # Shown once: after a reload (still signed in by the session cookie; still on /portal/keys) the secret
        # is nowhere in the page.
        self.driver.refresh()
        self.assert_signed_in()
        self.wait("the keys section", lambda: self.find('[data-page="keys"]').is_displayed())
        self.wait("the key list", lambda: "ci" in self.column("key-rows", 0))
        self.assertFalse(self.find("#new-key").is_displayed())
        # tk_<32 hex key id>_<secret>; the secret may itself contain '_'.
        key_id, secret = "key_" + plaintext[3:35], plaintext[36:]
        self.assertNotIn(secret, self.driver.page_source)

        self.find(f'button[data-key="{key_id}"]').click()
        self.accept_confirmation("Revoke", "ci")
        self.wait("the key revoked", lambda: any(
            s.startswith("revoked") for n, s in zip(self.column("key-rows", 0), self.column("key-rows", 5))
            if n == "ci"))
        status, _ = self.http.call("GET", "/v1/tenant", token=plaintext)
        self.assertEqual(status, 401, "a revoked key stops working")

    def test_05_portal_shows_the_invoice_and_its_lines_after_the_period_closes(self):
        self.go("billing")
        self.assertEqual(self.column("invoice-rows", 0), [], "no invoice before the period closes")
        # Before the close: the next invoice so far, as the close would bill it now.
        upcoming = self.http.ok("GET", "/v1/invoices/upcoming", token=self.portal["api_key"])
        self.assertTrue(upcoming["lines"], upcoming)
        self.wait("the next invoice so far", lambda: self.column("upcoming-lines", 0)
                  == [line["description"] for line in upcoming["lines"]])
        self.assertEqual(self.text("#upcoming-total"), money(upcoming["subtotal_cents"], upcoming["currency"]))
        closed = self.http.op("POST", "/admin/billing/close-period")["invoices"]
        mine = [i for i in closed if i["tenant_id"] == self.portal["tenant_id"]]
        self.assertEqual(len(mine), 1, closed)
        self.driver.refresh()
        self.assert_signed_in()
        self.wait("the invoice", lambda: self.column("invoice-rows", 0) == [mine[0]["number"]])
        self.assertEqual(self.column("invoice-rows", 3), ["open"])
        self.assertEqual(self.column("invoice-rows", 4), [money(mine[0]["total_cents"], mine[0]["currency"])])
        type(self).portal_invoice = mine[0]

        self.find("#invoice-rows tr.clickable").click()
        self.wait("the invoice's lines", lambda: self.find("#invoice-detail").is_displayed())
        self.assertEqual(self.column("invoice-lines", 0), [line["description"] for line in mine[0]["lines"]])
        self.assertEqual(self.column("invoice-lines", 3),
                         [money(line["amount_cents"], mine[0]["currency"]) for line in mine[0]["lines"]])
        self.assertIn(mine[0]["number"], self.text("#invoice-pay"), "an open invoice says how to pay it")

    def test_06_portal_changes_plan_after_seeing_the_proration(self):
        plans = [p["name"] for p in self.http.ok("GET", "/v1/plans")["plans"]]
        self.assertEqual([o.get_attribute("value") for o in self.finds("#plan-name option")], plans)
        self.find('#plan-name option[value="pro"]').click()
        self.find("#plan-form button[type=submit]").click()
        self.wait("the preview", lambda: self.find("#plan-preview").is_displayed())
        preview = self.http.ok("GET", "/v1/plan/preview?plan=pro", token=self.portal["api_key"])
        text = self.text("#plan-preview-text")
        self.assertIn("from starter to pro", text)
        self.assertIn(money(preview["proration"]["charge_cents"]), text)
        self.find("#plan-cancel").click()
        self.assertFalse(self.find("#plan-preview").is_displayed())
        self.assertEqual(self.http.ok("GET", "/v1/tenant", token=self.portal["api_key"])["plan"], "starter",
                         "nothing changes before the confirmation")

        self.find("#plan-form button[type=submit]").click()
        self.wait("the preview", lambda: self.find("#plan-preview").is_displayed())
        self.find("#plan-confirm").click()
        self.wait_text("#current-plan", "pro")
        self.assertFalse(self.find("#error").is_displayed(), self.find("#error").text)
        self.assertIn("starter → pro", self.text("#plan-result"))
        self.assertEqual(self.http.ok("GET", "/v1/tenant", token=self.portal["api_key"])["plan"], "pro")
        self.assert_clean_console()
        self.screenshot("portal")

    def test_06b_portal_adds_a_webhook_shown_once_and_sets_alerts(self):
        self.go("integrations")
        self.find("#webhook-url").send_keys("https://hooks.example.com/tenantry")
        self.find('#webhook-form input[value="invoice.paid"]').click()
        self.find('#webhook-form input[value="export.ready"]').click()
        self.find("#webhook-form button[type=submit]").click()
        self.wait("the signing secret", lambda: self.find("#new-webhook").is_displayed())
        self.assertTrue(self.text("#new-webhook-secret").startswith("whsec_"))
        hooks = self.http.ok("GET", "/v1/webhooks", token=self.portal["api_key"])["webhooks"]
        self.assertEqual([(h["url"], h["events"]) for h in hooks],
                         [("https://hooks.example.com/tenantry", ["invoice.paid", "export.ready"])])
        self.wait("the endpoint listed", lambda: self.column("webhook-rows", 0) == ["https://hooks.example.com/tenantry"])

        self.wait("the default alerts", lambda: "queries" in self.column("alert-rows", 0))
        box = self.find("#alert-thresholds")
        box.clear()
        box.send_keys("queries:50, tokens:90")
        self.find("#alert-form button[type=submit]").click()
        self.wait("the new thresholds", lambda: self.column("alert-rows", 0) == ["queries", "tokens"])
        self.assertEqual(self.column("alert-rows", 1), ["50 %", "90 %"])
        alerts = self.http.ok("GET", "/v1/alerts", token=self.portal["api_key"])["thresholds"]
        self.assertEqual(alerts, [{"meter": "queries", "percent": 50}, {"meter": "tokens", "percent": 90}])

        self.go("settings")
        self.find("#cap-cents").send_keys("2500")
        self.find("#cap-form button[type=submit]").click()
        self.wait("the cap saved", lambda: self.http.ok("GET", "/v1/tenant", token=self.portal["api_key"])
                  ["config"]["overage_limit_cents"] == 2500)
        self.find("#cap-cents").clear()
        self.find("#cap-form button[type=submit]").click()
        self.wait("the cap lifted", lambda: self.http.ok("GET", "/v1/tenant", token=self.portal["api_key"])
                  ["config"]["overage_limit_cents"] is None)

        # Deleting asks first; dismissing keeps the endpoint, accepting removes it.
        self.go("integrations")
        button = f'button[data-webhook="{hooks[0]["webhook_id"]}"]'
        self.find(button).click()
        self.driver.switch_to.alert.dismiss()
        self.assertEqual(len(self.http.ok("GET", "/v1/webhooks", token=self.portal["api_key"])["webhooks"]), 1)
        self.find(button).click()
        self.driver.switch_to.alert.accept()
        self.wait("the endpoint removed", lambda: self.column("webhook-rows", 0) == [])
        self.assertEqual(self.http.ok("GET", "/v1/webhooks", token=self.portal["api_key"])["webhooks"], [])
        self.assert_clean_console()

    def test_07_portal_renders_a_hostile_name_as_text(self):
        self.find("#sign-out").click()
        self.wait("the sign-in form", lambda: self.find("#sign-in").is_displayed())
        self.assertNotIn("tenantry_portal", self.session_cookies(), "signing out clears the cookie")
        status, _ = self.http.call("GET", "/v1/session", headers={"Cookie": "tenantry_portal=" + self.portal_cookie})
        self.assertEqual(status, 401, "and ends the session on the server")
        self.sign_in("#api-key", self.hostile["api_key"])
        self.assert_signed_in()
        self.go("overview")
        self.wait_text("#organization", HOSTILE)
        self.assertEqual(self.text("#who"), HOSTILE)
        self.assertEqual(self.finds("#organization *"), [], "the name made elements")
        self.assert_no_alert()

    def sign_in_fresh(self, api_key, section="overview"):
        """Signs out whoever is signed in and signs in with `api_key` at a section's URL."""
        self.sign_out_everywhere()
        self.open("/portal" if section == "overview" else "/portal/" + section)
        self.sign_in("#api-key", api_key)
        self.assert_signed_in()
        self.wait(f"the {section} section", lambda: self.find(f'[data-page="{section}"]').is_displayed())

    def test_07b_portal_refuses_a_key_without_the_admin_scope_and_says_why(self):
        created = self.http.ok("POST", "/v1/keys", {"name": "ask-only", "scopes": ["query"]}, self.portal["api_key"])
        self.sign_out_everywhere()
        self.open("/portal")
        self.sign_in("#api-key", created["api_key"])
        self.assert_error_shown("admin scope")
        self.assertFalse(self.find("#app").is_displayed())
        self.assert_nothing_stored()

    def test_07c_portal_asks_a_question_and_shows_sources_and_cost(self):
        self.sign_in_fresh(self.portal["api_key"], "ask")
        self.find("#ask-question").send_keys("How long do refunds take?")
        self.find("#ask-form button[type=submit]").click()
        self.wait("the answer", lambda: self.find("#ask-result").is_displayed())
        self.assertTrue(self.text("#ask-answer"))
        self.assertIn("Handbook", self.text("#ask-citations"))
        self.assertIn("14 days", self.text("#ask-citations"))
        self.assertRegex(self.text("#ask-cost"), r"\d+ prompt and \d+ completion tokens, \d+\.\d\d USD")

    def test_07d_portal_exports_the_data(self):
        self.go("data")
        self.find("#export-start").click()
        self.wait("the archive", lambda: self.find("#export-download").is_displayed(), timeout=30)
        self.assertTrue(self.text("#export-status").startswith("Ready: "), self.text("#export-status"))
        self.assertTrue(self.find("#export-download").get_attribute("href").startswith("blob:"))
        # The page holds the archive the API serves: same id, same SHA-256 as the archive fetched here.
        status = self.text("#export-status")
        export_id = status.removeprefix("Ready: ").split(" ")[0]
        req = urllib.request.Request(self.base + "/v1/export/" + export_id,
                                     headers={"Authorization": "Bearer " + self.portal["api_key"]})
        with urllib.request.urlopen(req, timeout=30) as r:
            archive = r.read()
        self.assertEqual(archive[:2], b"\x1f\x8b", "a gzip archive")
        self.assertIn("SHA-256 " + hashlib.sha256(archive).hexdigest(), status)
        self.assertEqual(self.find("#export-download").get_attribute("download"), f"tenantry-{export_id}.tar.gz")

    def test_07e_a_cancelled_tenant_sees_why_and_reactivates(self):
        leaving = self.http.signup("leaving@browser.test", "Leaving Org", "trial")
        self.http.ok("POST", "/v1/tenant/cancel", token=leaving["api_key"])
        self.sign_in_fresh(leaving["api_key"])
        self.wait("the state banner", lambda: self.find("#state-banner").is_displayed())
        self.assertIn("cancelled", self.text("#state-banner"))
        self.go("documents")
        self.wait("the documents note", lambda: self.find("#documents-note").is_displayed())
        self.assertIn("reactivate", self.text("#documents-note"))
        self.go("data")
        self.assertFalse(self.find("#cancel-subscription").is_displayed())
        self.find("#reactivate").click()
        self.wait("the banner gone", lambda: not self.find("#state-banner").is_displayed())
        state = self.http.ok("GET", "/v1/tenant", token=leaving["api_key"])["state"]
        self.assertIn(state, ["active", "trialing"])
        self.assertFalse(self.find("#error").is_displayed(), self.find("#error").text)
        type(self).leaving = leaving

    def test_07f_deleting_the_organisation_needs_its_name_typed(self):
        doomed = self.http.signup("doomed@browser.test", "Doomed Org", "trial")
        self.sign_in_fresh(doomed["api_key"], "data")
        self.assertFalse(self.find("#erase-submit").is_enabled())
        self.find("#erase-confirm").send_keys("Doomed")
        self.assertFalse(self.find("#erase-submit").is_enabled(), "a partial name does not arm the button")
        self.find("#erase-confirm").send_keys(" Org")
        self.assertTrue(self.find("#erase-submit").is_enabled())
        self.find("#erase-submit").click()
        self.assert_error_shown("being erased")
        self.assertTrue(self.find("#sign-in").is_displayed())
        status, _ = self.http.call("GET", "/v1/tenant", token=doomed["api_key"])
        self.assertEqual(status, 401, "the erased tenant's key stops working")

    def test_07f2_a_tenant_waiting_for_payment_sees_what_it_owes(self):
        owing = self.http.signup("owing@browser.test", "Owing Org", "pro")
        self.sign_in_fresh(owing["api_key"])
        self.wait("the state banner", lambda: self.find("#state-banner").is_displayed())
        invoice = self.http.op("GET", f"/admin/tenants/{owing['tenant_id']}")["invoices"][0]
        self.assertIn("first payment is pending", self.text("#state-banner"))
        self.assertIn(invoice["number"], self.text("#state-banner"))
        self.go("billing")
        self.assertTrue(self.find("#amount-due").is_displayed())
        self.assertEqual(self.column("due-rows", 0), [invoice["number"]])
        self.assertEqual(self.column("due-rows", 2), [money(invoice["total_cents"], invoice["currency"])])
        self.find("#due-rows tr.clickable").click()
        self.wait("the invoice's lines", lambda: self.find("#invoice-detail").is_displayed())
        self.assertEqual(self.column("invoice-lines", 0), [line["description"] for line in invoice["lines"]])
        self.assertFalse(self.find("#error").is_displayed(), "a 402 elsewhere is no error: " + self.find("#error").text)
        # Paid (here by the operator, as the manual provider does), the tenant is served and owes nothing.
        self.http.op("POST", f"/admin/invoices/{invoice['invoice_id']}/payment", {"outcome": "succeeded"})
        type(self).owing_invoice = invoice
        deadline = time.time() + 10
        while self.http.ok("GET", "/v1/tenant", token=owing["api_key"])["state"] != "active":
            self.assertLess(time.time(), deadline, "never provisioned")
            time.sleep(0.05)
        self.driver.refresh()
        self.assert_signed_in()
        self.wait("the banner gone", lambda: not self.find("#state-banner").is_displayed())
        self.assertFalse(self.find("#amount-due").is_displayed())

    def test_07f3_a_sign_in_link_from_the_outbox_signs_in_and_sets_a_password(self):
        self.sign_out_everywhere()
        self.open("/portal")
        self.find("#sign-in-email").send_keys("portal@browser.test")
        self.find("#send-link").click()
        self.wait("the link sent", lambda: self.find("#link-sent").is_displayed())
        self.assertIn("sign-in link is on its way", self.text("#link-sent"))
        outbox = os.path.join(self.tmp, "data", "tenants", self.portal["tenant_id"], "outbox")

        def link():
            for name in os.listdir(outbox) if os.path.isdir(outbox) else []:
                with open(os.path.join(outbox, name)) as f:
                    found = [w for w in f.read().split() if "/portal?sign_in=" in w]
                if found:
                    return found[0]
            return None
        url = self.wait("the sign-in link in the outbox", link)
        self.assertTrue(url.startswith(self.base + "/portal?sign_in="), url)
        self.driver.get(url)
        self.assert_signed_in()
        self.wait_text("#organization", "Portal Org")
        self.assertNotIn("sign_in", self.driver.current_url, "the link's token leaves the address bar")

        self.go("settings")
        for css in ["#new-password", "#repeat-password"]:
            self.find(css).send_keys("a brand new passphrase")
        self.find("#password-form button[type=submit]").click()
        self.wait("the password set", lambda: self.find("#password-result").is_displayed())
        self.assert_accessible("the portal's settings")
        self.find("#sign-out").click()
        self.wait("the sign-in form", lambda: self.find("#sign-in").is_displayed())
        self.driver.get(url)
        self.assert_error_shown("not valid")
        self.sign_in_with_password("portal@browser.test", "a brand new passphrase")
        self.assert_signed_in()
        self.wait_text("#organization", "Portal Org")
        self.screenshot("portal-signed-in-by-link")

    def test_07g_portal_fits_a_phone(self):
        self.sign_in_fresh(self.portal["api_key"])
        for section in ["overview", "documents", "billing", "keys", "settings", "integrations", "data"]:
            self.go(section)
            self.assert_fits(360)
            self.screenshot(f"portal-{section}-phone")
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            self.assert_fits_desktop()
            self.assert_accessible(f"the portal's {section} section")
            self.screenshot(f"portal-{section}")
        self.assert_clean_console()

    # ---- the console ---------------------------------------------------------------------------------

    def test_10_console_refuses_a_wrong_token_visibly(self):
        # The story moves on: the paid signup pays, the portal tenant's invoice fails (dunning), a day passes
        # (the idle tenants are nudged).
        paid_invoice = self.http.op("GET", f"/admin/tenants/{self.paid['tenant_id']}")["invoices"][0]
        self.http.op("POST", f"/admin/invoices/{paid_invoice['invoice_id']}/payment", {"outcome": "succeeded"})
        type(self).paid_invoice = paid_invoice
        self.http.op("POST", f"/admin/invoices/{self.portal_invoice['invoice_id']}/payment", {"outcome": "failed"})
        deadline = time.time() + 10
        while self.http.op("GET", f"/admin/tenants/{self.paid['tenant_id']}")["state"] != "active":
            self.assertLess(time.time(), deadline, "the paid signup was not provisioned")
            time.sleep(0.05)
        self.http.op("POST", "/admin/clock/advance", {"seconds": 25 * HOUR})

        self.open("/console")
        self.assertTrue(self.find("#sign-in").is_displayed())
        self.sign_in("#operator-token", "not-the-token")
        self.assert_error_shown("Unauthenticated")
        self.assertFalse(self.find("#app").is_displayed())

    def test_11_console_shows_states_funnel_revenue_dunning_and_health(self):
        self.sign_in("#operator-token", OPERATOR_TOKEN)
        self.assert_signed_in()
        self.assert_nothing_stored()
        self.assertTrue(self.session_cookies()["tenantry_console"]["httpOnly"], "the console's session is HttpOnly")
        # What the story made: three trials, the portal tenant past due, two paid signups active, the tenant
        # that left and came back (its trial resumed), the erased one.
        expected = dict.fromkeys(STATES, "0") | {"trialing": "3", "past_due": "1", "active": "2", "erased": "1"}
        came_back = self.http.op("GET", f"/admin/tenants/{self.leaving['tenant_id']}")["state"]
        expected[came_back] = str(int(expected[came_back]) + 1)
        self.wait_text("#tenants-total", "8")
        shown = {e.get_attribute("data-state"): e.text for e in self.finds("#state-rows .count")}
        self.assertEqual(shown, expected)
        by_api = {s: str(len(self.http.op("GET", f"/admin/tenants?state={s}")["tenants"])) for s in STATES}
        self.assertEqual(shown, by_api, "the counts agree with GET /admin/tenants")

        funnel = {e.get_attribute("data-milestone"): e.text for e in self.finds("#funnel-rows .count")}
        self.assertEqual(funnel, {"signed_up": "8", "provisioned": "8", "first_document": "2",
                                  "first_query": "2", "activated": "2"})
        self.assertEqual(self.column("funnel-rows", 0), FUNNEL)

        self.assertEqual(self.text("#revenue-paid"),
                         money(self.paid_invoice["total_cents"] + self.owing_invoice["total_cents"]))
        self.assertEqual(self.text("#revenue-open"), money(self.portal_invoice["total_cents"]))
        self.assertEqual(self.text("#revenue-paid-count"), "2 invoices")

        self.assertEqual(self.column("dunning-rows", 0), ["Portal Org"])
        self.assertEqual(self.column("dunning-rows", 1), ["past_due"])
        self.assertEqual(self.column("dunning-rows", 4), [money(self.portal_invoice["total_cents"])])

        overview = self.http.op("GET", "/admin/overview")["integrations"]
        self.assertEqual(self.text("#jobs-pending"), f"{overview['jobs_pending']:,}")
        self.assertEqual(self.text("#jobs-parked"), f"{overview['jobs_parked']:,}")
        self.assertEqual(self.text("#payments"), "manual provider")
        self.assertRegex(self.text("#outbox"), r"^\d+ delivered, \d+ waiting$")
        self.assertEqual(self.text("#analytics"), "none, 0 events waiting")
        self.assertEqual(self.column("parked-rows", 0), [j["kind"] for j in
                                                        self.http.op("GET", "/admin/jobs?state=parked")["jobs"]])
        self.assertEqual(self.text("#win-back-sent"), "0")
        self.assert_clean_console()

    def test_12_console_renders_hostile_names_as_text(self):
        names = self.column("tenant-rows", 0)
        self.assertIn(HOSTILE, names)
        self.assertEqual(self.finds("#tenant-rows img, #tenant-rows script"), [], "the name made elements")
        self.assertEqual(len(self.finds("script")), 2, "only the page's own scripts")
        self.assert_no_alert()

    def open_tenant(self, tenant_id, organization):
        self.click_fresh(f'#tenant-rows [data-tenant="{tenant_id}"]')
        self.wait_text("#detail-organization", organization)
        self.assertTrue(self.find("#tenant-detail").is_displayed())
        self.assertEqual(self.text("#detail-id"), tenant_id)

    def milestones(self):
        return {e.get_attribute("data-milestone"): e.text for e in self.finds("#milestone-rows .milestone")}

    def test_12b_console_grants_credit_that_the_portal_shows(self):
        self.open_tenant(self.portal["tenant_id"], "Portal Org")
        self.find("#credit-cents").send_keys("1250")
        self.find("#credit-reason").send_keys("Launch goodwill")
        self.find("#credit-form button[type=submit]").click()
        self.accept_confirmation("Grant 12.50 USD of credit to Portal Org")
        self.wait("the grant listed", lambda: self.column("detail-credit-rows", 0) == ["Launch goodwill"])
        self.assertEqual(self.column("detail-credit-rows", 2), [money(1250, "usd")])
        credits = self.http.ok("GET", "/v1/credits", token=self.portal["api_key"])
        self.assertEqual(credits["balance_cents"], 1250)
        self.assert_clean_console()

    def test_13_console_shows_a_stalled_tenants_events_and_nudge(self):
        self.open_tenant(self.idle["tenant_id"], "Idle Org")
        reached = self.milestones()
        self.assertNotEqual(reached["signed_up"], "not yet")
        self.assertNotEqual(reached["provisioned"], "not yet")
        self.assertEqual([reached[m] for m in FUNNEL[2:]], ["not yet"] * 3)
        self.assertIn("trialing", self.column("event-rows", 2), "the lifecycle transition into the trial")
        templates = [e.get_attribute("data-template") for e in self.finds("#notification-rows .template")]
        self.assertEqual(templates, ["nudge_no_document"])
        self.assertNotEqual(self.column("notification-rows", 3), ["—"], "the nudge was delivered")
        triggers = [e.get_attribute("data-trigger") for e in self.finds("#intervention-rows .intervention")]
        self.assertIn("nudge_no_document", triggers)
        self.assertEqual(self.column("intervention-rows", 1)[triggers.index("nudge_no_document")], "sent")
        self.screenshot("console")

    def test_14_console_shows_no_nudge_for_an_activated_tenant(self):
        self.open_tenant(self.active["tenant_id"], "Active Org")
        self.assertNotIn("not yet", self.milestones().values())
        self.assertEqual(self.column("notification-rows", 0), [], "an activated tenant is not nudged")
        triggers = [e.get_attribute("data-trigger") for e in self.finds("#intervention-rows .intervention")]
        self.assertNotIn("nudge_no_document", triggers)

    def test_15_console_shows_the_hostile_tenant_as_text(self):
        self.open_tenant(self.hostile["tenant_id"], HOSTILE)
        self.assertEqual(self.finds("#tenant-detail img, #tenant-detail script"), [])
        self.assert_no_alert()
        self.assert_accessible("the console with a tenant open")
        self.assert_clean_console()

    def test_16_console_searches_filters_and_labels_erased_tenants(self):
        self.find("#tenant-search").send_keys("portal")
        self.wait("the search", lambda: self.column("tenant-rows", 0) == ["Portal Org"])
        self.assertEqual(self.text("#tenant-page"), "1–1 of 1")
        self.find("#tenant-search").clear()
        self.find("#tenant-search").send_keys("browser.test")
        # The erased tenant's email is gone with its data: seven of the eight match.
        self.wait("the tenants by email", lambda: len(self.column("tenant-rows", 0)) == 7)
        self.find('#tenant-sort option[value="organization"]').click()
        api = [t["organization"] if t["state"] != "erased" else "erased tenant " + t["tenant_id"] for t in
               self.http.op("GET", "/admin/tenants?q=browser.test&sort=organization")["tenants"]]
        self.assertEqual(len(api), 7)
        self.wait("sorted by organisation", lambda: self.column("tenant-rows", 0) == api)
        self.find("#tenant-search").clear()
        self.find("#tenant-search").send_keys("x")
        self.find("#tenant-search").send_keys("\b")
        self.find('#state-filter option[value="erased"]').click()
        self.wait("the erased tenant", lambda: len(self.column("tenant-rows", 0)) == 1)
        self.assertTrue(self.column("tenant-rows", 0)[0].startswith("erased tenant ten_"), "an erased tenant is labelled")
        self.find('#state-filter option[value=""]').click()
        self.wait("every tenant", lambda: len(self.column("tenant-rows", 0)) == 8)

    def test_17_console_marks_an_open_invoice_paid_after_confirming(self):
        self.open_tenant(self.portal["tenant_id"], "Portal Org")
        number = self.portal_invoice["number"]
        self.wait("the open invoice", lambda: self.column("detail-invoice-rows", 0).count(number) == 1)
        row = self.column("detail-invoice-rows", 0).index(number)
        self.assertEqual(self.column("detail-invoice-rows", 2)[row], "open")
        self.finds('#detail-invoice-rows button[data-action="paid"]')[0].click()
        self.wait("a confirmation", lambda: self._alert_open())
        self.driver.switch_to.alert.dismiss()
        self.assertEqual(self.http.op("GET", f"/admin/tenants/{self.portal['tenant_id']}")["state"], "past_due")
        self.finds('#detail-invoice-rows button[data-action="paid"]')[0].click()
        self.accept_confirmation("Mark " + number + " paid")
        self.wait("the invoice paid", lambda: self.column("detail-invoice-rows", 2)[row] == "paid")
        self.assertEqual(self.http.op("GET", f"/admin/tenants/{self.portal['tenant_id']}")["state"], "active",
                         "paying the overdue invoice ends dunning")
        self.assertFalse(self.find("#error").is_displayed(), self.find("#error").text)

    def test_18_console_suspends_and_reactivates_after_confirming(self):
        self.open_tenant(self.idle["tenant_id"], "Idle Org")
        self.assertFalse(self.find("#detail-reactivate").is_displayed())
        self.find("#detail-suspend").click()
        self.accept_confirmation("Suspend Idle Org")
        self.wait_text("#detail-state", "suspended")
        status, _ = self.http.call("GET", "/v1/documents", token=self.idle["api_key"])
        self.assertEqual(status, 402, "a suspended tenant's API answers 402")
        audit = self.http.op("GET", f"/admin/audit?tenant_id={self.idle['tenant_id']}")
        self.assertIn("operator", json.dumps(audit), "the suspension is audited with the operator as actor")
        self.find("#detail-reactivate").click()
        self.accept_confirmation("Reactivate Idle Org")
        self.wait("the tenant served again", lambda: self.text("#detail-state") != "suspended")
        status, _ = self.http.call("GET", "/v1/documents", token=self.idle["api_key"])
        self.assertEqual(status, 200)
        self.assert_clean_console()
        self.assert_accessible("the console after operator actions")

    def test_19_console_extends_a_trial_and_shows_usage_and_the_timeline(self):
        tenant = self.active["tenant_id"]
        before = self.http.op("GET", f"/admin/tenants/{tenant}")
        self.assertEqual(before["state"], "trialing")
        self.open_tenant(tenant, "Active Org")
        self.assertEqual(self.text("#detail-documents"), "1")
        self.assertEqual(self.text("#detail-keys"), "1 active")
        self.wait("the usage chart", lambda: self.finds("#detail-usage-chart rect.chart-bar"))
        queries = sum(int(b.get_attribute("data-value")) for b in self.finds("#detail-usage-chart rect.chart-bar"))
        self.assertEqual(queries, 1, "the one question the tenant asked")
        self.wait("the timeline", lambda: "tenant.signed_up" in self.column("timeline-rows", 1))
        self.assertIn("milestone: first_query", self.column("timeline-rows", 1))

        self.assertTrue(self.find("#trial-form").is_displayed(), "a trialing tenant's trial can be extended")
        days = self.find("#trial-days")
        days.clear()
        days.send_keys("3")
        self.find("#trial-form button[type=submit]").click()
        self.accept_confirmation("Extend Active Org's trial by 3 days")
        self.wait("the trial extended in the timeline", lambda: "trial.extended" in self.column("timeline-rows", 1))
        after = self.http.op("GET", f"/admin/tenants/{tenant}")
        moved = (datetime.datetime.fromisoformat(after["trial_ends_at"].replace("Z", "+00:00"))
                 - datetime.datetime.fromisoformat(before["trial_ends_at"].replace("Z", "+00:00")))
        self.assertEqual(moved, datetime.timedelta(days=3))
        self.assert_clean_console()
        self.assert_accessible("the console's tenant page")
        self.screenshot("console-tenant")

    def test_20_console_shows_revenue_by_month(self):
        revenue = self.http.op("GET", "/admin/revenue?months=12")
        newest = revenue["months"][-1]
        self.assertGreater(newest["mrr_cents"], 0, revenue)
        self.wait("the revenue table", lambda: self.column("revenue-rows", 0)[:1] == [newest["month"]])
        self.assertEqual(self.column("revenue-rows", 1)[0], money(newest["mrr_cents"], revenue["currency"]))
        self.assertEqual(self.column("revenue-rows", 9)[0], str(newest["failed_payments"]))
        bars = [int(b.get_attribute("data-value")) for b in self.finds("#mrr-chart rect.chart-bar")]
        self.assertEqual(sum(bars), sum(m["mrr_cents"] for m in revenue["months"]))
        self.assert_accessible("the console's revenue")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: dashboards.py PATH_TO_TENANTRY_BINARY")
    BINARY = os.path.abspath(sys.argv.pop(1))
    result = unittest.main(verbosity=2, exit=False, failfast=True).result
    sys.exit(0 if result.wasSuccessful() else 1)
