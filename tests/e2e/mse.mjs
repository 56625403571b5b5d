// Run MSE cases (page/mse_switch.js) in headless Debian Chromium with playwright-core.
// Usage: node mse.mjs '<json config>'   -> prints one JSON result line.
// Config: {page, chromium, timeout_s, cases: [{name, mime, init_url, segment_urls, play_s,
//          playback_rate}]}; each case runs in a fresh page of one browser, and its report
//          (see page/mse_switch.js) lands in result.reports[name].
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const cfg = JSON.parse(process.argv[2]);
const FLAGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];

async function main() {
  const profile = mkdtempSync(join(tmpdir(), "cadenza-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
  });
  const result = { ok: false, reports: {}, console: [] };
  try {
    for (const one of cfg.cases) {
      const page = await context.newPage();
      page.on("console", (m) => { if (m.type() === "error") result.console.push(`${one.name}: ${m.text().slice(0, 300)}`); });
      page.on("pageerror", (e) => result.console.push(`${one.name}: pageerror: ${String(e).slice(0, 300)}`));
      await page.goto(cfg.page, { waitUntil: "load" });
      // The page bounds every wait of a case by timeout_s (evaluate itself has no bound; the
      // test's subprocess timeout is the backstop).
      result.reports[one.name] = await page.evaluate((c) => window.mseSwitch(c), { timeout_s: cfg.timeout_s, ...one });
      await page.close();
    }
    result.ok = true;
  } catch (e) {
    result.error = String(e && e.stack ? e.stack : e);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((e) => { process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + "\n"); process.exit(1); });
