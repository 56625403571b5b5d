// cadenza demo player: lists packaged tracks, plays one with hls.js, dash.js or Shaka,
// and shows the current rendition, switches, buffer and throughput live.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const audio = $("audio");
  let current = null;
  let lastBitrate = null;

  function kbps(bps) { return bps ? `${Math.round(bps / 1000)} kb/s` : "–"; }

  function logSwitch(bps, codecs) {
    if (!bps || bps === lastBitrate) return;
    const row = document.createElement("tr");
    row.innerHTML = `<td>${audio.currentTime.toFixed(1)} s</td><td>${kbps(lastBitrate)} → ${kbps(bps)}</td><td>${codecs || ""}</td>`;
    $("switchrows").prepend(row);
    lastBitrate = bps;
    $("rendition").textContent = kbps(bps);
    $("codecs").textContent = codecs || "";
  }

  // The origin's start hint for this session (EXT-X-SESSION-DATA, RFC 8216 4.3.4.4):
  // the level to start on is the highest whose bitrate is at or below it, else the lowest.
  const START_BITRATE_ID = "com.cadenza.start-bitrate";
  function hintedStartLevel(levels, sessionData) {
    const hint = sessionData && sessionData[START_BITRATE_ID];
    const bps = hint ? parseInt(hint.VALUE, 10) : NaN;
    if (!Number.isFinite(bps) || !levels || !levels.length) return null;
    let best = null;
    let lowest = 0;
    levels.forEach((level, index) => {
      if (level.bitrate < levels[lowest].bitrate) lowest = index;
      if (level.bitrate <= bps && (best === null || level.bitrate > levels[best].bitrate)) best = index;
    });
    return best === null ? lowest : best;
  }

  function teardown() {
    if (!current) return;
    try { current.destroy ? current.destroy() : current.reset(); } catch (e) { /* already gone */ }
    current = null;
  }

  async function play() {
    teardown();
    lastBitrate = null;
    $("switchrows").innerHTML = "";
    const track = $("track").value;
    const manifest = $("protocol").value === "hls" ? "master.m3u8" : "manifest.mpd";
    const query = new URLSearchParams();
    if ($("codec").value) query.set("codec", $("codec").value);
    if ($("abr").value === "origin") query.set("abr", "origin");
    const search = query.toString();
    const path = `/${track}/${manifest}${search ? `?${search}` : ""}`;
    $("url").textContent = path;
    // The players get the manifest's absolute URL, never the bare path: dash.js 5 adds
    // CMCD (CTA-5004) to a request with `new URL(request.url)` and no base
    // (CmcdReporter.createRequestReport in @svta/cml-cmcd), which throws on a path, so
    // the manifest request went out without CMCD and the CmcdController logged
    // "Failed to construct 'URL': Invalid URL" for it and again for its response.
    const src = new URL(path, window.location.href).href;
    const player = $("player").value;
    if (player === "hls") {
      if ($("protocol").value !== "hls") { $("url").textContent = "hls.js plays HLS only"; return; }
      // Loading starts once the start level is set from the manifest's hint.
      const hls = new Hls({ cmcd: {}, autoStartLoad: false });
      hls.on(Hls.Events.MANIFEST_PARSED, (_e, d) => {
        const start = hintedStartLevel(d.levels, d.sessionData);
        if (start !== null) hls.startLevel = start;
        hls.startLoad();
      });
      hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => { const l = hls.levels[d.level]; logSwitch(l.bitrate, l.codecSet || l.audioCodec); });
      hls.loadSource(src);
      hls.attachMedia(audio);
      current = hls;
      setInterval(() => { if (current === hls) $("throughput").textContent = kbps(hls.bandwidthEstimate); }, 500);
    } else if (player === "dash") {
      if ($("protocol").value !== "dash") { $("url").textContent = "dash.js plays DASH only"; return; }
      const dash = dashjs.MediaPlayer().create();
      dash.updateSettings({ streaming: { cmcd: { enabled: true } } });
      dash.on(dashjs.MediaPlayer.events.QUALITY_CHANGE_RENDERED, (e) => { const r = e.newRepresentation; if (r) logSwitch(r.bandwidth, r.codecs); });
      dash.initialize(audio, src, true);
      current = dash;
      setInterval(() => {
        if (current !== dash) return;
        try { $("throughput").textContent = kbps(dash.getAverageThroughput("audio") * 1000); } catch (e) { /* not yet */ }
      }, 500);
    } else {
      shaka.polyfill.installAll();
      const sp = new shaka.Player();
      await sp.attach(audio);
      sp.addEventListener("adaptation", () => { const t = sp.getVariantTracks().find((v) => v.active); if (t) logSwitch(t.bandwidth, t.audioCodec); });
      current = sp;
      await sp.load(src);
      const t = sp.getVariantTracks().find((v) => v.active);
      if (t) logSwitch(t.bandwidth, t.audioCodec);
      setInterval(() => { if (current === sp) $("throughput").textContent = kbps(sp.getStats().estimatedBandwidth); }, 500);
    }
    audio.play().catch(() => {});
  }

  setInterval(() => {
    let ahead = 0;
    for (let i = 0; i < audio.buffered.length; i++) {
      if (audio.buffered.start(i) <= audio.currentTime && audio.currentTime <= audio.buffered.end(i)) ahead = audio.buffered.end(i) - audio.currentTime;
    }
    $("buffer").textContent = `${ahead.toFixed(1)} s`;
    $("bufferbar").style.width = `${Math.min(100, (ahead / 30) * 100)}%`;
  }, 250);

  $("player").addEventListener("change", () => { const p = $("player").value; if (p !== "shaka") $("protocol").value = p; });
  $("play").addEventListener("click", play);
  fetch("/v1/tracks").then((r) => r.json()).then((data) => {
    for (const id of data.tracks) {
      const opt = document.createElement("option");
      opt.textContent = id;
      $("track").append(opt);
    }
  });
})();
