// Media Source Extensions, by hand: one SourceBuffer per switching group, the
// group's ONE init segment appended once, then every media segment of the track
// from a different rung each time (the origin serves them cross-origin, so CORS
// is real). Then the element plays from the start while a Web Audio analyser
// measures the decoded level. window.mseSwitch(cfg) resolves to a plain report
// that the driver (tests/e2e/mse.mjs) prints for the test to judge:
//   cfg: {mime, init_url, segment_urls: [...], play_s, playback_rate, timeout_s}
//   ->   {supported, appends: [{url, ok, error, buffered}], errors: [...],
//         media_error, buffered, duration_s, played_to_s, levels: [{t, rms}]}
(function () {
  "use strict";

  // Every wait is a condition with a deadline: the report says which one ran out.
  function until(deadline, what, attach) {
    return new Promise((resolve, reject) => {
      const left = deadline - performance.now();
      if (left <= 0) { reject(new Error(`deadline passed before ${what}`)); return; }
      const timer = setTimeout(() => reject(new Error(`no ${what} before the deadline`)), left);
      attach((value) => { clearTimeout(timer); resolve(value); }, (err) => { clearTimeout(timer); reject(err); });
    });
  }

  function ranges(timeRanges) {
    const out = [];
    for (let i = 0; i < timeRanges.length; i++) out.push([timeRanges.start(i), timeRanges.end(i)]);
    return out;
  }

  async function fetchBytes(url) {
    const response = await fetch(url, { mode: "cors" });
    if (!response.ok) throw new Error(`HTTP ${response.status} for ${url}`);
    return response.arrayBuffer();
  }

  // One append, finished by its updateend; an `error` event (a parse or decode
  // failure, MSE 3.5.1) or an exception from appendBuffer rejects it.
  function append(sourceBuffer, bytes, deadline) {
    return until(deadline, "updateend", (resolve, reject) => {
      const done = () => { off(); resolve(); };
      const failed = () => { off(); reject(new Error("SourceBuffer error event")); };
      const off = () => {
        sourceBuffer.removeEventListener("updateend", done);
        sourceBuffer.removeEventListener("error", failed);
      };
      sourceBuffer.addEventListener("updateend", done);
      sourceBuffer.addEventListener("error", failed);
      try { sourceBuffer.appendBuffer(bytes); } catch (e) { off(); reject(e); }
    });
  }

  function meter(audio, report) {
    // Unmuted element -> analyser -> destination: the level that reaches the speakers.
    const ctx = new AudioContext();
    const source = ctx.createMediaElementSource(audio);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    analyser.connect(ctx.destination);
    const buf = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      if (ctx.state !== "running") ctx.resume();
      if (audio.paused || audio.currentTime <= 0) return;
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      report.levels.push({ t: audio.currentTime, rms: Math.sqrt(sum / buf.length) });
    }, 50);
    return () => { clearInterval(timer); ctx.close(); };
  }

  window.mseSwitch = async function (cfg) {
    const deadline = performance.now() + (cfg.timeout_s || 30) * 1000;
    const report = {
      supported: MediaSource.isTypeSupported(cfg.mime), appends: [], errors: [],
      media_error: null, buffered: [], duration_s: null, played_to_s: null, levels: [],
    };
    const audio = document.getElementById("audio");
    audio.addEventListener("error", () => {
      const e = audio.error;
      report.media_error = e ? `${e.code}:${e.message}` : "error";
    });
    const mediaSource = new MediaSource();
    const opened = until(deadline, "sourceopen", (resolve) => mediaSource.addEventListener("sourceopen", resolve, { once: true }));
    audio.src = URL.createObjectURL(mediaSource);
    let sourceBuffer = null;
    try {
      await opened;
      sourceBuffer = mediaSource.addSourceBuffer(cfg.mime);
      sourceBuffer.addEventListener("error", () => report.errors.push("sourcebuffer:error"));
      for (const url of [cfg.init_url, ...cfg.segment_urls]) {
        const entry = { url, ok: false, error: null, buffered: [] };
        report.appends.push(entry);
        try {
          await append(sourceBuffer, await fetchBytes(url), deadline);
          entry.ok = true;
        } catch (e) {
          entry.error = String(e && e.message ? e.message : e);
          report.errors.push(`append ${url}: ${entry.error}`);
        }
        entry.buffered = ranges(sourceBuffer.buffered);
        if (!entry.ok || mediaSource.readyState !== "open") break;
      }
      report.buffered = ranges(sourceBuffer.buffered);
      if (report.errors.length === 0 && report.media_error === null) {
        mediaSource.endOfStream();
        report.duration_s = mediaSource.duration;
        if (cfg.play_s > 0) await play(audio, cfg, deadline, report);
      }
    } catch (e) {
      report.errors.push(String(e && e.message ? e.message : e));
    }
    if (sourceBuffer !== null && report.buffered.length === 0) {
      try { report.buffered = ranges(sourceBuffer.buffered); } catch (e) { /* removed on error */ }
    }
    report.played_to_s = audio.currentTime;
    return report;
  };

  // Play from the start until currentTime reaches cfg.play_s (0: no playback), or the
  // end, or an error, or the deadline.
  async function play(audio, cfg, deadline, report) {
    const stop = meter(audio, report);
    try {
      audio.muted = false;
      // Faster than real time, resampled (no time-stretching), to hear every rung in a short run.
      audio.preservesPitch = false;
      audio.playbackRate = cfg.playback_rate || 1;
      audio.currentTime = 0;
      await audio.play();
      let settled = false;
      await until(deadline, `currentTime >= ${cfg.play_s}`, (resolve, reject) => {
        const check = () => {
          if (settled) return;
          if (report.media_error !== null) reject(new Error(`media error ${report.media_error}`));
          else if (audio.currentTime >= cfg.play_s || audio.ended) resolve();
          else setTimeout(check, 50);
        };
        check();
      }).finally(() => { settled = true; });
    } finally {
      audio.pause();
      stop();
    }
  }
})();
