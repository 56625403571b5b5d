// Audio worklet: finds the onset of each tone pip in what the media element plays (the
// live tests' wall-clock pips, tests/e2e/pip_feeder.py), in context sample frames.
// An onset is the first sample whose magnitude passes `threshold` at least `holdoff_s`
// after the previous onset; the pip's pitch is then measured over `window_s` starting
// `skip_s` after the onset (past the codec's attack smearing) by correlating with each
// candidate pitch. A pip is posted as {frame, code, level, ratio}; an onset whose pitch is
// unclear (weak, or the two strongest pitches within `min_ratio`) as {frame, code: null}.
class PipDetector extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.freqs = o.freqs_hz;
    this.threshold = o.threshold;
    this.holdoff = Math.round(o.holdoff_s * sampleRate);
    this.skip = Math.round(o.skip_s * sampleRate);
    this.window = Math.round(o.window_s * sampleRate);
    this.minRatio = o.min_ratio;
    this.lastOnset = -Infinity;
    this.pending = null;
  }

  measure(x, frame) {
    const p = this.pending;
    const offset = frame - p.frame - this.skip;
    if (offset < 0) return;
    const t = offset / sampleRate;
    for (let k = 0; k < this.freqs.length; k++) {
      const phase = 2 * Math.PI * this.freqs[k] * t;
      p.re[k] += x * Math.cos(phase);
      p.im[k] += x * Math.sin(phase);
    }
    if (offset + 1 < this.window) return;
    const levels = p.re.map((re, k) => (2 * Math.hypot(re, p.im[k])) / this.window);
    const order = levels.map((_, k) => k).sort((a, b) => levels[b] - levels[a]);
    const best = levels[order[0]];
    const ratio = best / Math.max(levels[order[1]], 1e-9);
    const clear = best >= this.threshold / 2 && ratio >= this.minRatio;
    this.port.postMessage({ frame: p.frame, code: clear ? order[0] : null, level: best, ratio });
    this.pending = null;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const n = input[0].length;
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      x /= channels;
      const frame = currentFrame + i;
      if (this.pending) this.measure(x, frame);
      else if (Math.abs(x) >= this.threshold && frame - this.lastOnset >= this.holdoff) {
        this.lastOnset = frame;
        this.pending = { frame, re: this.freqs.map(() => 0), im: this.freqs.map(() => 0) };
      }
    }
    return true;
  }
}

registerProcessor("pip-detector", PipDetector);
