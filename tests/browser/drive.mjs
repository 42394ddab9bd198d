// Drives the system Chromium (never a downloaded one) with puppeteer-core for tests/test_browser.py.
// argv[2]: JSON {pages: [{url, screenshot?, ready?}], timeoutMs}. Each page runs until
// `window.__result` is set (or, with `ready`, until that expression is true; then a screenshot is
// taken when `screenshot` names a file). stdout: JSON list of {result, console}.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

// puppeteer-core is installed in tests/node (package.json + lock there).
const requireFromNode = createRequire(new URL("../node/package.json", import.meta.url));
const { default: puppeteer } = await import(pathToFileURL(requireFromNode.resolve("puppeteer-core")).href);

const job = JSON.parse(process.argv[2]);
const executablePath = process.env.CLASP_CHROMIUM ?? "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "clasp-chromium-"));
const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  userDataDir: profile,
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    // Every page but the last one opened is a background tab: without these its timers run at most
    // once a second and its renderer gets less CPU, which makes the pages' timing depend on the order
    // they were opened in.
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
  ],
});
const timeout = job.timeoutMs ?? 60000;
let results;
try {
  results = await Promise.all(job.pages.map(async (spec) => {
    const page = await browser.newPage();
    const logs = [];
    page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
    await page.setViewport({ width: 900, height: 600 });
    await page.goto(spec.url, { timeout });
    try {
      await page.waitForFunction(spec.ready ?? "window.__result !== undefined && window.__result !== null", { timeout, polling: 100 });
    } catch (err) {
      return { result: { ok: false, error: `page did not finish: ${err.message}` }, console: logs };
    }
    if (spec.screenshot) await page.screenshot({ path: spec.screenshot });
    const result = await page.evaluate(spec.resultExpr ?? "window.__result ?? null");
    return { result, console: logs };
  }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(results));
