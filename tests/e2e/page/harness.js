// Player harness: one <audio> element driven by hls.js, dash.js or Shaka Player.
// It records what a tester needs (startup time, rendition switches, errors,
// buffered ranges, the decoded audio level) in window.cadenzaState, which the
// Playwright driver (tests/e2e/drive.mjs) polls. Usable against any origin:
// open index.html?player=hls&src=<manifest URL>.
(function () {
  "use strict";
  const state = {
    player: null, src: null, started_at: null, startup_s: null, playing: false,
    errors: [], fatal: null, switches: [], bitrate_bps: null, rms: 0, rms_max: 0,
    events: [], steering: [],
  };
  window.cadenzaState = state;
  // The level every 100 ms with the playhead then: [currentTime, rms, paused], so a test can
  // tell which part of the media was heard (read it at the end; snapshots leave it out).
  const levels = [];
  window.cadenzaLevels = levels;

  function now() { return performance.now() / 1000; }
  function note(kind, detail) { state.events.push({ t: now(), kind, detail }); }

  // Content steering: each steering manifest the player loaded, with its priority.
  function noteSteering(priority) {
    state.steering.push({ t: now(), wall: Date.now() / 1000, priority: priority || null });
    if (state.steering.length > 200) state.steering.shift();
  }

  function recordSwitch(bitrate) {
    if (bitrate && bitrate !== state.bitrate_bps) {
      state.switches.push({ t: now(), from_bps: state.bitrate_bps, to_bps: bitrate });
      state.bitrate_bps = bitrate;
    }
  }

  // The worklet that finds pips in the live tests' audio, next to this script.
  const PIP_WORKLET_URL = new URL("pip_worklet.js", document.currentScript ? document.currentScript.src : location.href).href;

  function meter(audio) {
    // Web Audio analyser on the unmuted element: proves sound, not silence. Returns the
    // context and the element's source node (an element has one), for other listeners.
    const ctx = new AudioContext();
    const source = ctx.createMediaElementSource(audio);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    analyser.connect(ctx.destination);
    const buf = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      // A sequence replaced this element: stop metering it.
      if (!audio.isConnected) { clearInterval(timer); ctx.close(); return; }
      if (ctx.state !== "running") ctx.resume();
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      state.rms = Math.sqrt(sum / buf.length);
      state.rms_max = Math.max(state.rms_max, state.rms);
      if (levels.length < 6000) levels.push([audio.currentTime, state.rms, audio.paused]);
    }, 100);
    return { ctx, source };
  }

  function startHls(audio, src, cfg) {
    const hls = new Hls(Object.assign({ maxBufferLength: cfg.buffer_s || 30, maxMaxBufferLength: cfg.buffer_s || 30 },
      cfg.cmcd ? { cmcd: { sessionId: cfg.session_id || undefined, contentId: cfg.content_id || undefined } } : {},
      cfg.hls || {}));
    hls.on(Hls.Events.ERROR, (_e, data) => {
      state.errors.push(`${data.type}:${data.details}${data.fatal ? ":fatal" : ""}`);
      if (data.fatal) state.fatal = `${data.type}:${data.details}`;
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_e, data) => {
      const level = hls.levels[data.level];
      recordSwitch(level && level.bitrate);
      note("level", level && level.bitrate);
    });
    hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (_e, data) => {
      noteSteering(data.steeringManifest && data.steeringManifest["PATHWAY-PRIORITY"]);
    });
    hls.loadSource(src);
    hls.attachMedia(audio);
    window.cadenzaPlayer = hls;
  }

  function startDash(audio, src, cfg) {
    const player = dashjs.MediaPlayer().create();
    // dash.js 5 has no streaming.buffer.stableBufferTime (4.x had): bufferTimeDefault is it.
    const settings = { streaming: { buffer: { bufferTimeAtTopQuality: cfg.buffer_s || 30, bufferTimeDefault: cfg.buffer_s || 12 } } };
    if (cfg.cmcd) settings.streaming.cmcd = { enabled: true, sid: cfg.session_id || undefined, cid: cfg.content_id || undefined };
    if (cfg.cmsd) settings.streaming.cmsd = { enabled: true, abr: { applyMb: true, etpWeightRatio: 0.5 } };
    player.updateSettings(Object.assign(settings, cfg.dash || {}));
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
      const msg = e && e.error ? `${e.error.code}:${e.error.message}` : "error";
      state.errors.push(msg);
      // A segment that failed after its retries (27 content, 28 initialization) is not the
      // end: dash.js blacklists that BaseURL's service location and carries on with another
      // (or retries the same). Any other error stops playback.
      const code = e && e.error ? e.error.code : null;
      if (code !== 27 && code !== 28) state.fatal = msg;
    });
    player.on(dashjs.MediaPlayer.events.QUALITY_CHANGE_RENDERED, (e) => {
      const rep = e.newRepresentation || null;
      recordSwitch(rep ? rep.bandwidth : null);
      note("quality", rep ? rep.bandwidth : null);
    });
    player.on(dashjs.MediaPlayer.events.CONTENT_STEERING_REQUEST_COMPLETED, (e) => {
      noteSteering(e && e.currentSteeringResponseData && e.currentSteeringResponseData.pathwayPriority);
    });
    // EME (encrypted content): e.g. {"org.w3.clearkey": {serverURL: <licence URL>}}.
    if (cfg.dash_protection) player.setProtectionData(cfg.dash_protection);
    player.initialize(audio, src, true);
    window.cadenzaPlayer = player;
  }

  async function startShaka(audio, src, cfg) {
    shaka.polyfill.installAll();
    const player = new shaka.Player();
    await player.attach(audio);
    const settings = { streaming: { bufferingGoal: cfg.buffer_s || 30 } };
    if (cfg.cmcd) {
      // Query mode, as docs/players.md configures it; Shaka makes up a sid when none is given.
      settings.cmcd = { enabled: true, useHeaders: false };
      if (cfg.session_id) settings.cmcd.sessionId = cfg.session_id;
      if (cfg.content_id) settings.cmcd.contentId = cfg.content_id;
    }
    player.configure(Object.assign(settings, cfg.shaka || {}));
    player.addEventListener("error", (e) => {
      const d = e.detail || {};
      state.errors.push(`shaka:${d.code}`);
      if (d.severity === 2) state.fatal = `shaka:${d.code}`;
    });
    player.addEventListener("adaptation", () => {
      const active = player.getVariantTracks().find((t) => t.active);
      recordSwitch(active && active.bandwidth);
    });
    window.cadenzaPlayer = player;
    try {
      await player.load(src);
      audio.play().catch((e) => note("play-rejected", String(e)));
      const active = player.getVariantTracks().find((t) => t.active);
      recordSwitch(active && active.bandwidth);
    } catch (e) {
      state.fatal = `shaka:${e.code || e}`;
      state.errors.push(state.fatal);
    }
  }

  // A sequence of cases in one page load (cfg.sequence: [{player, src, play_s, timeout_s,
  // hls, dash, shaka, dash_protection}]): each plays on a fresh <audio> element until its
  // currentTime reaches play_s, a fatal error or its timeout_s; its summary goes to
  // state.sequence_results and state.sequence_done is set after the last.
  function runSequence(cfg) {
    state.sequence_results = [];
    state.sequence_done = false;
    let index = -1;
    let began = 0;
    const next = () => {
      index += 1;
      if (index >= cfg.sequence.length) { state.sequence_done = true; return; }
      const old = document.getElementById("audio");
      const fresh = document.createElement("audio");
      fresh.id = "audio"; fresh.controls = true; fresh.crossOrigin = "anonymous";
      old.replaceWith(fresh);
      Object.assign(state, { startup_s: null, playing: false, errors: [], fatal: null, switches: [], bitrate_bps: null, rms: 0, rms_max: 0 });
      began = now();
      window.cadenzaStart(Object.assign({}, cfg, { sequence: undefined }, cfg.sequence[index]));
    };
    const finish = async () => {
      const item = cfg.sequence[index];
      const audio = document.getElementById("audio");
      state.sequence_results.push({ player: item.player, src: item.src, name: item.name || null, current_time: audio.currentTime, rms_max: state.rms_max, startup_s: state.startup_s, fatal: state.fatal, errors: state.errors.slice(0, 20) });
      const player = window.cadenzaPlayer;
      window.cadenzaPlayer = null;
      try {
        if (player && player.destroy) await player.destroy();
        else if (player && player.reset) player.reset();
      } catch (e) { note("destroy-failed", String(e)); }
      audio.pause();
      next();
    };
    let busy = false;
    const timer = setInterval(async () => {
      if (busy || state.sequence_done) { if (state.sequence_done) clearInterval(timer); return; }
      const item = cfg.sequence[index];
      const audio = document.getElementById("audio");
      const done = audio.currentTime >= (item.play_s || cfg.play_s || 2) || state.fatal || now() - began > (item.timeout_s || 30);
      if (done) { busy = true; await finish(); busy = false; }
    }, 200);
    next();
  }

  // Live (cfg.live): every 0.5 s the playhead's wall-clock time as the player maps it
  // (hls.js: hls.playingDate, from EXT-X-PROGRAM-DATE-TIME; dash.js: timeAsUTC(), from the
  // MPD's availabilityStartTime) against this page's clock, plus each `waiting` event and
  // each dash.js buffer-empty event after playback first started, and each `playing`
  // event (playback starting or resuming), by wall time.
  function probeLive(audio) {
    const live = { samples: [], waiting: [], buffer_empty: [], playing: [], seeks: [] };
    state.live = live;
    // A jump of the playhead once playing (a player's own catch-up seek to the live
    // edge): [wall s, from, to].
    let lastTime = null;
    audio.addEventListener("timeupdate", () => { lastTime = audio.currentTime; });
    audio.addEventListener("seeking", () => {
      if (state.playing && live.seeks.length < 200) live.seeks.push([Date.now() / 1000, lastTime, audio.currentTime]);
    });
    audio.addEventListener("waiting", () => { if (state.playing) live.waiting.push(Date.now() / 1000); });
    audio.addEventListener("playing", () => { if (live.playing.length < 200) live.playing.push(Date.now() / 1000); });
    const player = window.cadenzaPlayer;
    if (state.player === "dash" && player) {
      player.on(dashjs.MediaPlayer.events.BUFFER_EMPTY, () => { if (state.playing) live.buffer_empty.push(Date.now() / 1000); });
    }
    setInterval(() => {
      const wall = Date.now() / 1000;
      let mapped = null;
      let reported = null;
      try {
        if (state.player === "hls" && player.playingDate) {
          mapped = player.playingDate.getTime() / 1000;
          reported = player.latency;
        } else if (state.player === "dash" && state.playing) {
          mapped = player.timeAsUTC();
          reported = player.getCurrentLiveLatency();
        }
      } catch (e) {
        // not mapped yet (no manifest or no playhead): no sample
      }
      if (live.samples.length < 2000) {
        live.samples.push({ wall, current_time: audio.currentTime, playing: state.playing && !audio.paused,
          latency_s: mapped ? wall - mapped : null, player_latency_s: reported, rate: audio.playbackRate });
      }
    }, 500);
  }

  // Live pips (cfg.pips: {period_s, freqs_hz, threshold, holdoff_s, skip_s, window_s,
  // min_ratio}): the input carries its capture wall clock as tone pips, one at every
  // multiple of period_s whose pitch (its index in freqs_hz) is that multiple modulo the
  // number of pitches (tests/e2e/pip_feeder.py). An audio worklet on the element's output
  // finds each pip's onset in context frames; the context's output timestamp (a context
  // time and the performance time its frame reached the output) maps the onset to
  // performance.timeOrigin + performance.now(): the wall clock at which it was played.
  // Glass-to-glass latency is that minus the pip's capture instant, the latest multiple of
  // period_s at or before it with the pip's pitch. Kept in state.live.pips.
  function detectPips(audio, graph, cfg) {
    const pips = { detections: [], unclear: [], error: null };
    state.live.pips = pips;
    const { ctx, source } = graph;
    const codes = cfg.freqs_hz.length;
    const options = {
      freqs_hz: cfg.freqs_hz, threshold: cfg.threshold || 0.1, holdoff_s: cfg.holdoff_s || 1.0,
      skip_s: cfg.skip_s || 0.01, window_s: cfg.window_s || 0.04, min_ratio: cfg.min_ratio || 2,
    };
    const played = (frame) => {
      const onsetS = frame / ctx.sampleRate;
      const stamp = ctx.getOutputTimestamp();
      if (stamp.performanceTime > 0) {
        return { ms: stamp.performanceTime + (onsetS - stamp.contextTime) * 1000, mapping: "output-timestamp" };
      }
      // No output timestamp yet: the render clock plus the context's stated latencies.
      const ahead = onsetS - ctx.currentTime + ctx.baseLatency + (ctx.outputLatency || 0);
      return { ms: performance.now() + ahead * 1000, mapping: "current-time" };
    };
    ctx.audioWorklet.addModule(PIP_WORKLET_URL).then(() => {
      const node = new AudioWorkletNode(ctx, "pip-detector", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], processorOptions: options,
      });
      node.port.onmessage = (e) => {
        const d = e.data;
        const { ms, mapping } = played(d.frame);
        const wall = (performance.timeOrigin + ms) / 1000;
        if (d.code === null) {
          if (pips.unclear.length < 200) pips.unclear.push({ wall, level: d.level, ratio: d.ratio });
          return;
        }
        let index = Math.floor(wall / cfg.period_s);
        index -= (((index - d.code) % codes) + codes) % codes;
        const captured = index * cfg.period_s;
        if (pips.detections.length < 2000) {
          pips.detections.push({ wall, captured, latency_s: wall - captured, code: d.code, level: d.level,
            ratio: d.ratio, mapping, current_time: audio.currentTime, rate: audio.playbackRate });
        }
      };
      source.connect(node);
      node.connect(ctx.destination); // silent: it only listens, but must be pulled
    }).catch((e) => { pips.error = String(e); });
  }

  window.cadenzaStart = function (cfg) {
    if (cfg.sequence) { runSequence(cfg); return; }
    const audio = document.getElementById("audio");
    audio.muted = false;
    // Live dash.js starts playback itself (initialize's autoplay): a `play` event before
    // it listens means it never sees playback start, and never refreshes a dynamic MPD.
    const playsItself = cfg.live && cfg.player === "dash";
    audio.autoplay = !playsItself;
    state.player = cfg.player;
    state.src = cfg.src;
    state.started_at = now();
    audio.addEventListener("playing", () => {
      state.playing = true;
      if (state.startup_s === null) state.startup_s = now() - state.started_at;
    });
    audio.addEventListener("error", () => { state.fatal = state.fatal || `media:${audio.error && audio.error.code}`; });
    // A wait once playing: a stall (or a seek's), by the media element's own word.
    audio.addEventListener("waiting", () => { if (state.playing) note("waiting", audio.currentTime); });
    const graph = meter(audio);
    if (cfg.player === "hls") startHls(audio, cfg.src, cfg);
    else if (cfg.player === "dash") startDash(audio, cfg.src, cfg);
    else if (cfg.player === "shaka") startShaka(audio, cfg.src, cfg);
    else throw new Error(`unknown player ${cfg.player}`);
    if (cfg.live) probeLive(audio);
    if (cfg.live && cfg.pips) detectPips(audio, graph, cfg.pips);
    if (!playsItself) audio.play().catch((e) => note("play-rejected", String(e)));
  };

  function cmsdSeen() {
    // dash.js keeps the parsed CMSD headers (CTA-5006) on its HTTP request metrics.
    const player = window.cadenzaPlayer;
    if (state.player !== "dash" || !player || !player.getDashMetrics) return null;
    const requests = player.getDashMetrics().getHttpRequests("audio") || [];
    const withEtp = requests.filter((r) => r.cmsd && r.cmsd.dynamic && r.cmsd.dynamic.etp);
    const last = withEtp[withEtp.length - 1];
    return { requests: requests.length, with_etp: withEtp.length, last_etp_kbps: last ? last.cmsd.dynamic.etp : null };
  }

  function currentPathway() {
    // hls.js: the PATHWAY-ID of the level it loads (content steering keeps one pathway's levels).
    const player = window.cadenzaPlayer;
    if (state.player === "hls" && player && player.levels) {
      const level = player.levels[player.loadLevel >= 0 ? player.loadLevel : player.currentLevel];
      return level ? level.pathwayId : null;
    }
    return null;
  }

  window.cadenzaSnapshot = function () {
    const audio = document.getElementById("audio");
    const ranges = [];
    for (let i = 0; i < audio.buffered.length; i++) ranges.push([audio.buffered.start(i), audio.buffered.end(i)]);
    return Object.assign({}, state, { current_time: audio.currentTime, paused: audio.paused, ended: audio.ended, buffered: ranges, events: state.events.slice(-50), cmsd: cmsdSeen(), pathway: currentPathway() });
  };

  const params = new URLSearchParams(location.search);
  if (params.get("src")) {
    window.addEventListener("load", () => window.cadenzaStart({ player: params.get("player") || "hls", src: params.get("src") }));
  }
})();
