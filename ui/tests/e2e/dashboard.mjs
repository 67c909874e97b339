// The dashboard in a real browser (Debian's chromium driven by playwright-core) against a real
// head: run by crates/cli/tests/dashboard.rs, which starts a one-machine cluster.
//
// Environment: DASHBOARD_URL (the head's API), FLOTILLA_ADMIN_TOKEN (never in argv),
// ARTEFACTS (a directory for screenshots), WORKER (the local worker's name, default w1),
// JOB_FAILED and JOB_LONG (a failed job's id and a running one's), CHROMIUM (default
// /usr/bin/chromium).
//
// The head is restarted once, mid-test, by the Rust side: this script prints a line
// `@restart-head` and waits for a line on its standard input once the head is back.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const URL_ = env("DASHBOARD_URL").replace(/\/$/, "");
const TOKEN = env("FLOTILLA_ADMIN_TOKEN");
const ARTEFACTS = env("ARTEFACTS");
const WORKER = env("WORKER", "w1");
const CHROMIUM = env("CHROMIUM", "/usr/bin/chromium");
// A job whose dependency does not exist (failed), and one that runs until stopped.
const JOB_FAILED = env("JOB_FAILED");
const JOB_LONG = env("JOB_LONG");

const catalogue = (lang) =>
  JSON.parse(readFileSync(new URL(`../../src/lib/i18n/${lang}.json`, import.meta.url), "utf8"));
const en = catalogue("en");
const es = catalogue("es");

if (!existsSync(CHROMIUM)) {
  console.error(`no browser at ${CHROMIUM}: run tests/run (it installs Debian's chromium)`);
  process.exit(2);
}
mkdirSync(ARTEFACTS, { recursive: true });

const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

const log = (...a) => console.log("[dashboard]", ...a);
const problems = [];
/** Requests allowed to fail now (the head's restart), by a test on the URL and the error. */
let tolerate = null;

const profile = mkdtempSync(join(tmpdir(), "flotilla-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  locale: "en-US",
  viewport: { width: 1440, height: 900 },
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (tolerate?.(m.location().url || m.text(), m.text())) return;
    problems.push(`console error: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  page.on("requestfailed", (r) => {
    const why = r.failure()?.errorText ?? "";
    if (tolerate?.(r.url(), why)) return;
    problems.push(`request failed: ${r.method()} ${r.url()} ${why}`);
  });
  page.on("response", (r) => {
    if (r.status() < 400) return;
    if (tolerate?.(r.url(), String(r.status()))) return;
    problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });

  const row = (name) => page.locator(`tr[data-node="${name}"]`);
  const badge = (name) => row(name).locator("[data-state]");
  const state = (name) => badge(name).getAttribute("data-state");
  const reason = (name) => row(name).locator("td[data-reason]").getAttribute("data-reason");
  const shot = async (name) => {
    const path = join(ARTEFACTS, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    log(`screenshot ${path}`);
  };
  /** Polls `check` every 25 ms until it returns a truthy value; the elapsed ms and the value. */
  const until = async (what, check, timeoutMs) => {
    const t0 = Date.now();
    for (;;) {
      const v = await check().catch(() => null);
      if (v) return { ms: Date.now() - t0, value: v };
      if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await page.waitForTimeout(25);
    }
  };
  const contributing = async () => ["contributing", "throttled"].includes(await state(WORKER));

  // 1. The cluster: the head's coordinator and the local worker, with their badges.
  await page.goto(URL_ + "/");
  await until("the worker contributing", contributing, 90_000);
  await until("two rows", async () => (await page.locator("tr[data-node]").count()) === 2, 30_000);
  const names = await page.locator("tr[data-node]").evaluateAll((rows) => rows.map((r) => r.dataset.node));
  const head = names.find((n) => n !== WORKER);
  log(`nodes: ${names.join(", ")}; head ${head}: ${await state(head)}; ${WORKER}: ${await state(WORKER)}`);
  if ((await state(head)) !== "coordinator") throw new Error(`the head's row shows ${await state(head)}`);
  if ((await badge(WORKER).innerText()).trim() === "") throw new Error("the worker's badge is empty");
  await until("the tasks chart", () => page.locator("figure.chart svg").isVisible(), 20_000);
  // (A flat line has an empty box, which the browser calls invisible: count the path instead.)
  await until("a sparkline", async () => (await row(WORKER).locator("svg.spark path").count()) === 1, 20_000);
  await shot("cluster-en");

  // 2. Admin: a wrong token is refused with a clear message; the right one signs in.
  await page.click('a[data-view="admin"]');
  await page.waitForURL(/\/admin$/);
  tolerate = (url, what) => url.includes("/api/v1/whoami") && /401/.test(what);
  await page.fill('input[name="token"]', "not-the-admin-token");
  await page.click('form button[type="submit"]');
  await until(
    "the wrong-token message",
    async () => (await page.locator('[role="alert"]').innerText()).trim() === en["error.unauthorized"],
    5_000,
  );
  tolerate = null;
  await page.fill('input[name="token"]', TOKEN);
  await page.click('form button[type="submit"]');
  await until("the admin controls", () => row(WORKER).locator('[data-action="pause"]').isVisible(), 5_000);
  await shot("admin-en");

  // 3. Pause the worker from the page: its badge and reason follow.
  const before = { state: await state(WORKER), reason: await reason(WORKER) };
  await row(WORKER).locator('[data-action="pause"]').click();
  const paused = await until(
    "the worker's badge and reason to show the pause",
    async () => {
      const s = await state(WORKER);
      const r = await reason(WORKER);
      return s !== before.state && ["paused", "draining"].includes(s) && r === "paused_indefinitely" && { s, r };
    },
    30_000,
  );
  log(
    `pause reaction: ${paused.ms} ms (badge ${before.state} -> ${paused.value.s}, reason ${before.reason} -> ${paused.value.r})`,
  );
  const badgeText = (await badge(WORKER).innerText()).trim();
  const reasonShown = (await row(WORKER).locator("td[data-reason]").innerText()).trim();
  if (![en["state.paused"], en["state.draining"]].includes(badgeText)) throw new Error(`badge text ${badgeText}`);
  if (reasonShown !== en["reason.paused_indefinitely"]) throw new Error(`reason text ${reasonShown}`);
  await until("the worker paused", async () => (await state(WORKER)) === "paused", 60_000);
  await shot("admin-paused-en");

  // 4. Resume.
  await row(WORKER).locator('[data-action="resume"]').click();
  const resumed = await until("the worker contributing again", contributing, 60_000);
  log(`resume reaction: ${resumed.ms} ms (badge -> ${await state(WORKER)})`);

  // 4b. Jobs: the failed one says why (the installer's message); the running one stops when
  // an admin clicks Stop.
  const job = (id) => page.locator(`tr[data-job="${id}"]`);
  await until("the failed job with its reason", async () => {
    if ((await job(JOB_FAILED).getAttribute("data-status")) !== "FAILED") return false;
    const text = await job(JOB_FAILED).locator("td[data-message]").innerText();
    return text.includes("installing the job's dependencies failed") && text.includes("flotilla-no-such-package-4e1c");
  }, 120_000);
  await until("the long job running", async () => (await job(JOB_LONG).getAttribute("data-status")) === "RUNNING", 120_000);
  if (await job(JOB_FAILED).locator('[data-action="stop-job"]').count()) throw new Error("a failed job offers Stop");
  await job(JOB_LONG).locator('[data-action="stop-job"]').click();
  const stopped = await until(
    "the long job stopped",
    async () => (await job(JOB_LONG).getAttribute("data-status")) === "STOPPED",
    60_000,
  );
  log(`job stop: STOPPED on the page ${stopped.ms} ms after the click`);
  await shot("admin-jobs-en");

  // 5. The head goes away and comes back: the page says so and recovers by itself.
  tolerate = (url) => url.includes("/api/v1/");
  console.log("@restart-head");
  const lost = await until(
    "the connection-lost banner",
    async () => (await page.locator('[data-link="lost"]').innerText()).trim() === en["link.lost"],
    60_000,
  );
  log(`connection lost shown ${lost.ms} ms after the head was asked to stop`);
  const answer = await lines.next();
  if (answer.done || answer.value.trim() !== "ok") throw new Error(`the head did not come back: ${answer.value}`);
  const back = await until(
    "the banner to go and the worker to contribute",
    async () => (await page.locator("[data-link]").count()) === 0 && (await contributing()),
    120_000,
  );
  tolerate = null;
  log(`recovered ${back.ms} ms after the head was back`);

  // 6. Spanish: no English catalogue text left on screen, in either view.
  await page.selectOption('select[data-control="lang"]', "es");
  await until("the page in Spanish", async () => (await page.getAttribute("html", "lang")) === "es", 5_000);
  await page.click('[data-action="invite"]');
  await until("the join code", async () => (await page.locator("code.joincode").innerText()).startsWith("flot1-"), 10_000);
  await until("the QR code", () => page.locator(".code img").isVisible(), 5_000);
  // The new code heads the list of join codes; withdrawn there, it admits nobody.
  const newest = page.locator("tr[data-invite]").first();
  await until("the new code in the list", async () => (await newest.getAttribute("data-state")) === "usable", 10_000);
  await newest.locator('[data-action="withdraw-invite"]').click();
  await until("the code withdrawn", async () => (await newest.getAttribute("data-state")) === "withdrawn", 10_000);
  if ((await page.locator("code.joincode").count()) !== 0) throw new Error("the withdrawn code is still shown to copy");
  log("a join code was listed and withdrawn");
  const english = englishLeft();
  await checkSpanish(page, english, "admin");
  await shot("admin-es");
  await page.click('a[data-view="cluster"]');
  await page.waitForURL((u) => u.pathname === "/");
  await until("the nodes in Spanish", async () => (await page.locator("tr[data-node]").count()) === 2, 10_000);
  await checkSpanish(page, english, "cluster");
  await shot("cluster-es");

  // The language is remembered across a reload; the session stays signed in (this tab).
  // (Leaving a page aborts its event stream: that is the browser's doing, not a failure.)
  tolerate = (url, what) => url.endsWith("/api/v1/events") && what.includes("ERR_ABORTED");
  await page.reload();
  await until("Spanish after a reload", async () => (await page.getAttribute("html", "lang")) === "es", 10_000);
  await until("the rows after a reload", async () => (await page.locator("tr[data-node]").count()) === 2, 20_000);
  tolerate = null;

  if (problems.length) {
    throw new Error(`the page had problems:\n  ${problems.join("\n  ")}`);
  }
  log("all checks passed");
} finally {
  await context.close();
  stdin.close();
  rmSync(profile, { recursive: true, force: true });
}

/** English fragments (the literal parts of catalogue texts that Spanish translates), each as a
 * whole-word pattern, leaving out words that Spanish text uses too. */
function englishLeft() {
  const spanish = Object.values(es).join("\n");
  const out = new Map();
  for (const [key, text] of Object.entries(en)) {
    if (es[key] === text) continue;
    for (const part of text.split(/\{\w+\}/)) {
      const fragment = part.replace(/^[\s\p{P}]+|[\s\p{P}]+$/gu, "");
      if (fragment.length < 2 || !/\p{L}/u.test(fragment)) continue;
      const re = new RegExp(`(^|[^\\p{L}])${fragment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}($|[^\\p{L}])`, "u");
      if (re.test(spanish)) continue;
      out.set(fragment, { key, re });
    }
  }
  return out;
}

async function checkSpanish(page, english, view) {
  const texts = await page.evaluate(() => {
    const out = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const text = n.textContent.trim();
      const el = n.parentElement;
      // Data from the head (join codes, job commands) is not catalogue text.
      if (!text || !el || el.closest("[data-raw]")) continue;
      const shown = el.closest("option") ? el.closest("select").checkVisibility() : el.checkVisibility();
      if (shown) out.push(text);
    }
    return out;
  });
  const found = [];
  for (const text of texts) {
    for (const [fragment, { key, re }] of english) {
      if (re.test(text)) found.push(`"${fragment}" (${key}) in "${text}"`);
    }
  }
  log(`${view} in Spanish: ${texts.length} visible texts checked against ${english.size} English fragments`);
  if (found.length) throw new Error(`English left on the ${view} view in Spanish:\n  ${found.join("\n  ")}`);
  if (texts.length < 10) throw new Error(`only ${texts.length} texts on the ${view} view`);
}
