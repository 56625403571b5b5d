// The e2e drivers' browser: headless Debian Chromium through playwright-core, with a
// throwaway profile, and one JSON result line on stdout whatever happens.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const FLAGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];

// Launch Chromium (cfg.chromium, else /usr/bin/chromium; `options` go to the launch), run
// `body(context)`, and print `result` as one JSON line: ok when body returned, its error
// otherwise. The profile is removed either way; a failure to launch prints too.
export function runInChromium(cfg, result, body, options = {}) {
  const run = async () => {
    const profile = mkdtempSync(join(tmpdir(), "cadenza-chromium-"));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: cfg.chromium || "/usr/bin/chromium",
      headless: true,
      args: FLAGS,
      ...options,
    });
    try {
      await body(context);
      result.ok = true;
    } catch (e) {
      result.error = String(e && e.stack ? e.stack : e);
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
    process.stdout.write(JSON.stringify(result) + "\n");
  };
  run().catch((e) => {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + "\n");
    process.exit(1);
  });
}
