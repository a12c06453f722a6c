// The console in a real browser (Debian's Chromium through playwright-core), driven by
// tests/console.rs, which starts the daemon and passes what it made in the environment.
// Exits non-zero with the failed expectation on stderr.
"use strict";
const { chromium } = require("playwright-core");
const assert = require("assert");
const path = require("path");

const E = process.env;
const BASE = E.BASE;
const shots = E.SHOTS;

async function login(browser, token) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(30000);
  // A script that ran from data (an XSS) would show up as a dialog or an error.
  page.on("dialog", (d) => { throw new Error("a dialog opened: " + d.message()); });
  page.on("pageerror", (e) => { throw new Error("page error: " + e.message); });
  await page.goto(BASE + "/login");
  await page.fill('input[name="token"]', token);
  await Promise.all([page.waitForURL(BASE + "/"), page.click('button[type="submit"]')]);
  return { ctx, page };
}

async function apiFromPage(page, method, url, body) {
  return page.evaluate(async ([method, url, body]) => {
    const csrf = document.querySelector('meta[name="csrf"]').content;
    const r = await fetch(url, { method, headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined });
    return r.status;
  }, [method, url, body]);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-background-networking"],
  });
  try {
    // ---- admin: dashboard, manual backup, audit, search, restore as a copy, XSS ----
    const { ctx, page } = await login(browser, E.ADMIN);
    const stale = page.locator('tr[data-source="ledger"] .badge').first();
    assert.strictEqual(await stale.getAttribute("class"), "badge red", "the stale source is red");
    assert.strictEqual(await page.locator('tr[data-source="files"] .badge').first().getAttribute("class"), "badge green");
    await page.screenshot({ path: path.join(shots, "dashboard.png"), fullPage: true });

    await page.click('a[href="/sources/files"]');
    await page.fill('#backup-form input[name="label"]', "before the schema change");
    await page.fill('#backup-form input[name="reason"]', "change CHG-2231 from the console");
    await page.click('#backup-form button[type="submit"]');
    await page.waitForSelector('#backup-form output[data-state="succeeded"]', { timeout: 60000 });
    await page.reload();
    assert.ok((await page.locator("#jobs").innerText()).includes("before the schema change"), "the job is listed");
    // Its log, from the catalog: who asked and how it ended.
    await page.locator("#jobs button.joblog").first().click();
    await page.waitForFunction(() => {
      const p = document.querySelector("#jobs tr.log pre");
      return p && p.textContent.includes("succeeded");
    });
    const jlog = await page.locator("#jobs tr.log pre").innerText();
    assert.ok(jlog.includes("token admin from 127.0.0.1") && jlog.includes("snapshot"), "the job's log: " + jlog);
    await page.screenshot({ path: path.join(shots, "source.png"), fullPage: true });

    await page.goto(BASE + "/audit?action=backup");
    const audit = await page.locator("#audit").innerText();
    assert.ok(audit.includes("change CHG-2231 from the console"), "the manual backup is in the audit log: " + audit);
    assert.ok(audit.includes("token admin from 127.0.0.1"), "with the token and address");
    assert.ok((await page.locator("#verify").getAttribute("class")).includes("ok"), "audit verify is clean");
    await page.screenshot({ path: path.join(shots, "audit.png"), fullPage: true });

    await page.goto(BASE + "/search");
    await page.fill('#search-form input[name="q"]', "report.txt");
    await Promise.all([page.waitForURL(/\/search\?q=/), page.click('#search-form button[type="submit"]')]);
    const hit = page.locator("#hits tbody tr").first();
    assert.ok((await hit.innerText()).includes("report.txt"));
    await page.screenshot({ path: path.join(shots, "search.png"), fullPage: true });
    await Promise.all([page.waitForURL(/\/restore\?/), hit.locator("a.restore").click()]);
    await page.fill('#restore-form input[name="target"]', E.RESTORE_DIR + "/from-browser");
    await page.click('#restore-form button[type="submit"]');
    await page.waitForSelector('#restore-form output[data-state="succeeded"]', { timeout: 60000 });
    await page.screenshot({ path: path.join(shots, "restore.png"), fullPage: true });

    // A hostile file name is text, in the listing and in a preview.
    await page.goto(BASE + "/browse/" + E.SNAPSHOT + "?path=" + encodeURIComponent(E.HOSTILE_DIR));
    const names = await page.locator("#tree .name").allTextContents();
    assert.ok(names.includes("<img src=x onerror=alert(1)>"), "shown as text: " + JSON.stringify(names));
    assert.strictEqual(await page.locator("#tree img").count(), 0, "no element made from a name");
    await page.locator('tr:has-text("onerror") button.preview').click();
    await page.waitForFunction(() => document.getElementById("preview").textContent.includes("<b>"));
    assert.strictEqual(await page.locator("#preview b").count(), 0, "a preview is text");
    // The tree expands lazily.
    await page.goto(BASE + "/browse/" + E.SNAPSHOT + "?path=" + encodeURIComponent(E.DATA_DIR));
    await page.locator('button.expand').first().click();
    await page.waitForSelector('tr[data-parent] .name');
    await page.screenshot({ path: path.join(shots, "browse.png"), fullPage: true });
    await page.goto(BASE + "/drills");
    // No drill has run: a sentence says so, not an empty chart and table.
    assert.strictEqual(await page.locator("#no-drills").count(), 1, "the drills page says none ran");
    assert.strictEqual(await page.locator("#rto-chart").count(), 0, "no empty chart");
    await page.screenshot({ path: path.join(shots, "drills.png"), fullPage: true });
    await ctx.close();

    // ---- restore role: no in-place option, and the API refuses it ----
    const r = await login(browser, E.RESTORE);
    await r.page.goto(BASE + "/restore?snapshot=" + E.SNAPSHOT + "&path=" + encodeURIComponent(E.FILE));
    assert.strictEqual(await r.page.locator("#in-place").count(), 0, "no in-place choice for the restore role");
    assert.strictEqual(await r.page.locator('input[name="target"]').count(), 1);
    const code = await apiFromPage(r.page, "POST", "/api/restore/in-place",
      { snapshot: E.SNAPSHOT, paths: [E.FILE], confirm: E.SNAPSHOT.slice(0, 8) });
    assert.strictEqual(code, 403, "the API refuses in place to the restore role");
    assert.strictEqual(await r.page.locator('nav a[href="/audit"]').count(), 0, "no audit page for the restore role");
    await r.ctx.close();

    // ---- auditor: the audit log, but no file contents ----
    const a = await login(browser, E.AUDITOR);
    await a.page.goto(BASE + "/audit");
    assert.ok((await a.page.locator("#audit tbody tr").count()) > 0, "the auditor sees the log");
    const dl = await apiFromPage(a.page, "GET", "/api/snapshots/" + E.SNAPSHOT + "/file?path=" + encodeURIComponent(E.FILE));
    assert.strictEqual(dl, 403, "the auditor cannot download");
    const resp = await a.page.goto(BASE + "/browse/" + E.SNAPSHOT + "?path=/");
    assert.strictEqual(resp.status(), 403, "nor browse");
    await a.ctx.close();
    console.log("console: all checks passed");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
