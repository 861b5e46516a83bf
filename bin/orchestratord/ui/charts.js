// Small line charts on <canvas>: a fixed 15-minute window ending now, one line per series,
// gaps where a value is null, y from 0 to a rounded maximum. Redrawn only when data arrives
// (or the canvas is resized), never on a timer.

const WINDOW_MS = 15 * 60 * 1000;

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

/** 1, 2 or 5 times a power of ten, at least `v`. */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
  if (v >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(1);
}

export class LineChart {
  /**
   * @param canvas the element (its box sets the size)
   * @param series [{ key, label, color: css variable name }]
   */
  constructor(canvas, series) {
    this.canvas = canvas;
    this.series = series;
    this.samples = [];
    this.label = canvas.getAttribute('aria-label') || '';
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** Replace the data and redraw. */
  update(samples) {
    this.samples = samples;
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h || c.offsetParent === null) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 38;
    const bottom = h - 16;
    const top = 6;
    const right = w - 6;
    const last = this.samples.length ? this.samples[this.samples.length - 1] : null;
    const end = last ? last.t_ms : Date.now();
    const start = end - WINDOW_MS;
    let max = 0;
    for (const s of this.samples) for (const ser of this.series) {
      const v = s[ser.key];
      if (v != null && v > max) max = v;
    }
    max = niceMax(max);
    const x = (t) => left + ((t - start) / WINDOW_MS) * (right - left);
    const y = (v) => bottom - (v / max) * (bottom - top);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = cssVar('--muted');
    g.strokeStyle = cssVar('--grid');
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (const f of [0, 0.5, 1]) {
      const yy = Math.round(y(max * f)) + 0.5;
      g.beginPath();
      g.moveTo(left, yy);
      g.lineTo(right, yy);
      g.stroke();
      g.fillText(fmt(max * f), left - 4, yy);
    }
    g.textBaseline = 'alphabetic';
    g.textAlign = 'left';
    g.fillText('-15 min', left, h - 2);
    g.textAlign = 'right';
    g.fillText('now', right, h - 2);
    g.lineWidth = 1.5;
    for (const ser of this.series) {
      g.strokeStyle = cssVar(ser.color);
      g.beginPath();
      let pen = false;
      for (const s of this.samples) {
        const v = s[ser.key];
        if (v == null || s.t_ms < start) {
          pen = false;
          continue;
        }
        if (pen) g.lineTo(x(s.t_ms), y(v));
        else g.moveTo(x(s.t_ms), y(v));
        pen = true;
      }
      g.stroke();
    }
    // Legend, top right.
    g.textAlign = 'right';
    g.textBaseline = 'top';
    let lx = right;
    for (const ser of [...this.series].reverse()) {
      const text = last && last[ser.key] != null ? `${ser.label} ${fmt(last[ser.key])}` : ser.label;
      g.fillStyle = cssVar(ser.color);
      g.fillText(text, lx, top);
      lx -= g.measureText(text).width + 12;
    }
    const now = this.series
      .map((ser) => `${ser.label} ${last && last[ser.key] != null ? fmt(last[ser.key]) : 'none'}`)
      .join(', ');
    c.setAttribute('aria-label', `${this.label}: now ${now}`);
  }
}
