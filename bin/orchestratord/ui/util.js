// Shared helpers: DOM building (text only, never HTML from data), number formats, the live
// data store the stream fills, and a status line for action results.

/** document.getElementById. */
export const $ = (id) => document.getElementById(id);

/** An element with attributes (`class`, `text`, `on<event>`, others as attributes) and children. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

/** Milliseconds as `123 ms` / `1.2 s`; `–` for none. */
export function ms(v) {
  if (v == null) return '–';
  return v >= 10000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`;
}

/** A number with at most one decimal; `–` for none. */
export function num(v) {
  if (v == null || Number.isNaN(v)) return '–';
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/** Bytes in GiB/MiB. */
export function bytes(v) {
  if (v == null) return '–';
  return v >= 2 ** 30 ? `${(v / 2 ** 30).toFixed(1)} GiB` : `${Math.round(v / 2 ** 20)} MiB`;
}

/** Local time of a unix-ms instant. */
export function clock(t) {
  return t ? new Date(t).toLocaleTimeString() : '–';
}

/** A state badge. */
export function badge(state) {
  return el('span', { class: `badge s-${state}`, text: state });
}

/**
 * Keep `tbody`'s rows in step with `items` by key: rows are built once (`build(item)` returns
 * a <tr>) and updated in place (`update(tr, item)`), so focus and scroll survive refreshes.
 */
export function syncRows(tbody, items, key, build, update) {
  const old = new Map([...tbody.rows].map((r) => [r.dataset.key, r]));
  let prev = null;
  for (const item of items) {
    const k = key(item);
    let row = old.get(k);
    old.delete(k);
    if (!row) {
      row = build(item);
      row.dataset.key = k;
    }
    update(row, item);
    const at = prev ? prev.nextSibling : tbody.firstChild;
    if (at !== row) tbody.insertBefore(row, at);
    prev = row;
  }
  for (const r of old.values()) r.remove();
}

/** Set a cell's content (text, or a node) only when it changed. */
export function setCell(cell, content) {
  if (content instanceof Node) {
    const sig = content.outerHTML;
    if (cell.dataset.sig !== sig) {
      cell.replaceChildren(content);
      cell.dataset.sig = sig;
    }
  } else if (cell.textContent !== String(content)) {
    cell.textContent = content;
  }
}

/** What the live stream delivered: 15 minutes of samples and the latest tick. */
export const live = {
  history: [],
  tick: null,
  everyMs: 2000,
};

/** Announce the result of an action (polite live region). */
export function say(text, isError = false) {
  const t = $('toast');
  t.textContent = text;
  t.classList.toggle('error', isError);
}
