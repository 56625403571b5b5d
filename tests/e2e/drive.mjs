// Drive one playback case in headless Debian Chromium with playwright-core.
// Usage: node drive.mjs '<json config>'   -> prints one JSON result line.
// Config: {page, player, src, play_s, timeout_s, throttle: {after_s, kbps, latency_ms},
//          seek_to_s, buffer_s, cmcd, cmsd, session_id, screenshot, chromium,
//          record_requests: true (every response and failed request, with its wall time),
//          notify: {at_s, file} (write file once currentTime >= at_s: a cue for the test),
//          evaluate: "<JS expression>" (its value, at the end, in result.evaluated)}
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const cfg = JSON.parse(process.argv[2]);
const FLAGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const profile = mkdtempSync(join(tmpdir(), "cadenza-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
    viewport: { width: 1100, height: 760 },
  });
  const result = { ok: false, samples: [], console: [] };
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => { if (m.type() === "error") result.console.push(m.text().slice(0, 300)); });
    page.on("response", (r) => { if (r.status() >= 400) result.console.push(`HTTP ${r.status()} ${r.url()}`); });
    page.on("pageerror", (e) => result.console.push(`pageerror: ${String(e).slice(0, 300)}`));
    if (cfg.record_requests) {
      // Wall-clock seconds, so a test can line requests up with what it did meanwhile.
      result.requests = [];
      const keep = (entry) => { if (result.requests.length < 5000) result.requests.push(entry); };
      page.on("response", (r) => keep({ wall: Date.now() / 1000, url: r.url(), status: r.status() }));
      page.on("requestfailed", (q) => keep({ wall: Date.now() / 1000, url: q.url(), status: null, failed: (q.failure() || {}).errorText || "failed" }));
    }
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    await page.goto(cfg.page, { waitUntil: "load" });
    if (cfg.player) {
      await page.evaluate((c) => window.cadenzaStart(c), cfg);
    }
    if (cfg.demo) {
      // The demo page: pick the options, press Play, wait for live figures.
      await page.waitForFunction(() => document.querySelectorAll("#track option").length > 0, null, { timeout: 10000 });
      for (const [selector, value] of Object.entries(cfg.demo.select || {})) await page.selectOption(selector, value);
      await page.click("#play");
      await page.waitForFunction(() => document.getElementById("audio").currentTime > (window.__minTime || 3), null, { timeout: (cfg.timeout_s || 30) * 1000 });
      const texts = {};
      for (const id of ["rendition", "throughput", "buffer", "url"]) texts[id] = await page.textContent(`#${id}`);
      texts.switch_rows = await page.locator("#switchrows tr").count();
      texts.tracks = await page.locator("#track option").allTextContents();
      result.demo = texts;
    }
    const started = Date.now();
    const deadline = started + (cfg.timeout_s || 30) * 1000;
    let throttled = false;
    let seeked = false;
    let seekAt = null;
    let snap = null;
    while (Date.now() < deadline) {
      await sleep(250);
      if (cfg.demo) break;
      snap = await page.evaluate(() => (window.cadenzaSnapshot ? window.cadenzaSnapshot() : null));
      if (snap === null) continue;
      result.samples.push({ t: (Date.now() - started) / 1000, wall: Date.now() / 1000, current_time: snap.current_time, bitrate_bps: snap.bitrate_bps, buffered: snap.buffered });
      if (snap.fatal) break;
      if (cfg.notify && !result.notified && snap.current_time >= cfg.notify.at_s) {
        result.notified = { wall: Date.now() / 1000, current_time: snap.current_time };
        writeFileSync(cfg.notify.file, JSON.stringify(result.notified));
      }
      const highEnough = !cfg.throttle || (snap.bitrate_bps || 0) >= (cfg.throttle.min_bitrate_bps || 0);
      if (cfg.throttle && !throttled && snap.current_time >= cfg.throttle.after_s && highEnough) {
        const bytesPerS = (cfg.throttle.kbps * 1000) / 8;
        await cdp.send("Network.emulateNetworkConditions", {
          offline: false, latency: cfg.throttle.latency_ms || 50,
          downloadThroughput: bytesPerS, uploadThroughput: bytesPerS,
        });
        throttled = true;
        result.throttled_at_s = snap.current_time;
      }
      if (cfg.seek_to_s !== undefined && !seeked && snap.current_time >= 1) {
        await page.evaluate((t) => { document.getElementById("audio").currentTime = t; }, cfg.seek_to_s);
        seeked = true;
        seekAt = Date.now();
      }
      if (seeked && result.seek_resumed_s === undefined && snap.current_time > cfg.seek_to_s + 0.5) {
        result.seek_resumed_s = (Date.now() - seekAt) / 1000;
      }
      const target = seeked ? cfg.seek_to_s + cfg.play_s : cfg.play_s;
      if (cfg.play_s && snap.current_time >= target && (!cfg.throttle || throttled)) {
        if (!cfg.min_switches || snap.switches.length >= cfg.min_switches) break;
      }
    }
    if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot, fullPage: true });
    // A JavaScript expression whose (JSON-able) value the test wants from the page at the end.
    if (cfg.evaluate) result.evaluated = await page.evaluate(cfg.evaluate);
    result.final = snap;
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
