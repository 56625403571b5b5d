// Run MSE cases (page/mse_switch.js) in headless Debian Chromium with playwright-core.
// Usage: node mse.mjs '<json config>'   -> prints one JSON result line.
// Config: {page, chromium, timeout_s, cases: [{name, mime, init_url, segment_urls, play_s,
//          playback_rate}]}; each case runs in a fresh page of one browser, and its report
//          (see page/mse_switch.js) lands in result.reports[name].
import { runInChromium } from "./chromium.mjs";

const cfg = JSON.parse(process.argv[2]);

const result = { ok: false, reports: {}, console: [] };
runInChromium(cfg, result, async (context) => {
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
});
