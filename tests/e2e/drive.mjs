// Drive one playback case in headless Debian Chromium with playwright-core.
// Usage: node drive.mjs '<json config>'   -> prints one JSON result line.
// Config: {page, player, src, play_s, timeout_s, throttle: {after_s, kbps, latency_ms},
//          seek_to_s, buffer_s, cmcd, cmsd, session_id, screenshot, chromium,
//          record_requests: true (every response and failed request, with its wall time),
//          notify: {at_s, file} (write file once currentTime >= at_s: a cue for the test),
//          evaluate: "<JS expression>" (its value, at the end, in result.evaluated),
//          throttle_steps: [step, ...], decisions_url,
//          run_s: end the run after this many wall-clock seconds (live: currentTime starts
//          at the live edge), live: true (harness.js records latency samples and stalls),
//          sequence: [{player, src, play_s, ...}] (several cases in one page load, each on a
//          fresh <audio>; result.final.sequence_results holds one summary per case),
//          dash_protection: dash.js setProtectionData's argument (EME),
//          await_cmcd_key: "mtp" (the run ends only once a request carrying this CMCD key,
//          in the CMCD query argument or a CMCD-* header, has finished: result.cmcd_key_seen
//          holds its url and wall time; timeout_s bounds the wait)}
// Console warnings go to result.warnings (errors, failed loads and page errors to console).
// throttle_steps: network conditions changed in order, each once its conditions hold (all
// given ones): {name, after_s (currentTime at least), played_s (currentTime at least this
// much past the previous step's), decided: {min_bps, max_bps, count} (the latest `count`
// decisions of segments after the previous step's last decided segment all within the
// bounds; read from decisions_url, a session report with `decisions`, polled from here,
// unthrottled), then kbps + latency_ms (kbps null: no throttling; no kbps key: a mark that
// changes nothing) or stop: true (end the run). Leading steps without conditions apply
// before the player starts. Each applied step is in result.steps with its wall time,
// currentTime and the last decided segment then.
import { writeFileSync } from "node:fs";
import { runInChromium } from "./chromium.mjs";

const cfg = JSON.parse(process.argv[2]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const result = { ok: false, samples: [], console: [], warnings: [] };

// The CMCD keys (CTA-5004) a request carries: its CMCD query argument, or its CMCD-Request,
// CMCD-Object, CMCD-Status and CMCD-Session headers.
function cmcdKeys(request) {
  const lists = [];
  try {
    const query = new URL(request.url()).searchParams.get("CMCD");
    if (query) lists.push(query);
  } catch (e) {
    // not a URL this could parse: no CMCD in it
  }
  for (const [name, value] of Object.entries(request.headers())) {
    if (name.startsWith("cmcd-")) lists.push(value);
  }
  return lists.flatMap((list) => list.split(",").map((pair) => pair.split("=")[0].trim()));
}
runInChromium(cfg, result, async (context) => {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") result.console.push(m.text().slice(0, 300));
    else if (m.type() === "warning" && result.warnings.length < 200) result.warnings.push(m.text().slice(0, 300));
  });
  if (cfg.await_cmcd_key) {
    page.on("requestfinished", (q) => {
      if (!result.cmcd_key_seen && cmcdKeys(q).includes(cfg.await_cmcd_key)) {
        result.cmcd_key_seen = { url: q.url(), wall: Date.now() / 1000 };
      }
    });
  }
  page.on("response", (r) => { if (r.status() >= 400) result.console.push(`HTTP ${r.status()} ${r.url()}`); });
  page.on("pageerror", (e) => result.console.push(`pageerror: ${String(e).slice(0, 300)}`));
  if (cfg.record_requests) {
    // Wall-clock seconds, so a test can line requests up with what it did meanwhile.
    result.requests = [];
    const keep = (entry) => { if (result.requests.length < 5000) result.requests.push(entry); };
    page.on("response", (r) => {
      const headers = r.headers();
      const entry = { wall: Date.now() / 1000, url: r.url(), status: r.status() };
      if (headers.location) entry.location = headers.location;
      if (headers["x-cache-status"]) entry.cache = headers["x-cache-status"];
      keep(entry);
    });
    page.on("requestfailed", (q) => keep({ wall: Date.now() / 1000, url: q.url(), status: null, failed: (q.failure() || {}).errorText || "failed" }));
  }
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await page.goto(cfg.page, { waitUntil: "load" });
  const steps = cfg.throttle_steps || [];
  result.steps = [];
  let decisions = [];
  const lastSegment = () => decisions.reduce((m, d) => Math.max(m, d.segment), 0);
  const applyStep = async (step, currentTime) => {
    if (step.kbps !== undefined) {
      const bytesPerS = step.kbps === null ? -1 : (step.kbps * 1000) / 8;
      await cdp.send("Network.emulateNetworkConditions", {
        offline: false, latency: step.kbps === null ? 0 : step.latency_ms || 0,
        downloadThroughput: bytesPerS, uploadThroughput: bytesPerS,
      });
    }
    result.steps.push({ name: step.name || null, kbps: step.kbps, latency_ms: step.latency_ms || 0, wall: Date.now() / 1000, current_time: currentTime, last_segment: lastSegment() });
  };
  const unconditional = (step) => step.after_s === undefined && step.played_s === undefined && !step.decided && !step.stop;
  while (result.steps.length < steps.length && unconditional(steps[result.steps.length])) {
    await applyStep(steps[result.steps.length], 0);
  }
  const stepReady = (step, currentTime) => {
    const previous = result.steps[result.steps.length - 1];
    if (step.after_s !== undefined && currentTime < step.after_s) return false;
    if (step.played_s !== undefined && (!previous || currentTime < previous.current_time + step.played_s)) return false;
    if (step.decided) {
      const fresh = decisions.filter((d) => d.segment > (previous ? previous.last_segment : 0));
      const count = step.decided.count || 1;
      if (fresh.length < count) return false;
      const within = (d) => (step.decided.min_bps === undefined || d.bitrate_bps >= step.decided.min_bps)
        && (step.decided.max_bps === undefined || d.bitrate_bps <= step.decided.max_bps);
      if (!fresh.slice(-count).every(within)) return false;
    }
    return true;
  };
  const pollDecisions = async () => {
    try {
      const answer = await fetch(cfg.decisions_url, { signal: AbortSignal.timeout(5000) });
      if (answer.ok) decisions = (await answer.json()).decisions || [];
    } catch (e) {
      // not there yet (no request decided so far), or slow to answer: the next poll
    }
  };
  if (cfg.player || cfg.sequence) {
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
    const awaited = !cfg.await_cmcd_key || result.cmcd_key_seen !== undefined;
    if (cfg.demo) {
      if (awaited) break;
      continue;
    }
    snap = await page.evaluate(() => (window.cadenzaSnapshot ? window.cadenzaSnapshot() : null));
    if (snap === null) continue;
    result.samples.push({ t: (Date.now() - started) / 1000, wall: Date.now() / 1000, current_time: snap.current_time, bitrate_bps: snap.bitrate_bps, buffered: snap.buffered, rms: snap.rms });
    if (cfg.run_s && Date.now() - started >= cfg.run_s * 1000) break; // live: a wall-clock run
    if (cfg.sequence) {
      if (snap.sequence_done) break;
      continue; // each case of the sequence ends on its own (harness.js runSequence)
    }
    if (snap.fatal) break;
    if (result.steps.length < steps.length) {
      if (cfg.decisions_url) await pollDecisions();
      const step = steps[result.steps.length];
      if (stepReady(step, snap.current_time)) {
        if (step.stop) {
          result.steps.push({ name: step.name || "stop", stop: true, wall: Date.now() / 1000, current_time: snap.current_time, last_segment: lastSegment() });
          break;
        }
        await applyStep(step, snap.current_time);
      }
      if (snap.ended) break; // the track ended before every step: the test judges that
    }
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
    if (cfg.play_s && snap.current_time >= target && (!cfg.throttle || throttled) && awaited) {
      if (!cfg.min_switches || snap.switches.length >= cfg.min_switches) break;
    }
  }
  if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot, fullPage: true });
  // A JavaScript expression whose (JSON-able) value the test wants from the page at the end.
  if (cfg.evaluate) result.evaluated = await page.evaluate(cfg.evaluate);
  result.final = snap;
}, { viewport: { width: 1100, height: 760 } });
