// Overview: headline numbers, the three 15-minute charts, pools (with a fleet) and workers,
// all from the live stream; drain/undrain through the API.

import { json } from './api.js';
import { LineChart } from './charts.js';
import { $, el, badge, bytes, live, ms, num, say, setCell, syncRows } from './util.js';

let charts = [];

/** ready | busy | draining | unhealthy | failed, and why. */
export function workerState(w) {
  if (w.failure) return ['failed', w.failure];
  if (w.status === 'unhealthy') {
    const ago = Math.max(0, Math.round((Date.now() - w.last_seen_ms) / 1000));
    return ['unhealthy', `no heartbeat or health answer for ${ago} s`];
  }
  if (w.draining) return ['draining', 'drained: takes no new tasks'];
  if (w.slots_busy > 0) return ['busy', ''];
  return ['ready', ''];
}

async function act(path, what) {
  try {
    await json(path, { method: 'POST' });
    say(`${what}: done`);
  } catch (e) {
    say(`${what}: ${e.message}`, true);
  }
}

function buildWorker(w) {
  const cells = Array.from({ length: 9 }, (_, i) =>
    el('td', { class: i === 6 ? 'reason' : i === 7 ? 'num' : null }));
  cells[0].append(el('code', { text: w.worker_id }));
  const button = el('button', { type: 'button', class: 'small quiet' });
  button.addEventListener('click', () => {
    const id = button.dataset.id;
    const verb = button.dataset.verb;
    act(`/v2/workers/${encodeURIComponent(id)}/${verb}`, `${verb} ${id}`);
  });
  cells[8].append(button);
  return el('tr', {}, ...cells);
}

function updateWorker(tr, w) {
  const [state, reason] = workerState(w);
  const c = tr.cells;
  setCell(c[1], w.model);
  setCell(c[2], w.backend || '–');
  setCell(c[3], w.device || '–');
  setCell(c[4], `${w.slots_busy} / ${w.slots_total}`);
  setCell(c[5], badge(state));
  setCell(c[6], reason);
  setCell(c[7], num(Math.round(w.tokens_per_sec * 10) / 10));
  const b = c[8].firstChild;
  const verb = w.draining ? 'undrain' : 'drain';
  b.dataset.id = w.worker_id;
  b.dataset.verb = verb;
  setCell(b, verb === 'drain' ? 'Drain' : 'Undrain');
  b.setAttribute('aria-label', `${verb} worker ${w.worker_id}`);
}

function pools(fleet) {
  $('ov-pools-section').hidden = !fleet;
  if (!fleet) return;
  const box = $('ov-pools');
  const cards = fleet.pools.map((p) => {
    const state = p.drained ? 'draining' : p.reachable === false ? 'unhealthy' : p.reachable ? 'ready' : 'starting';
    const verb = p.drained ? 'undrain' : 'drain';
    return el('article', { class: 'pool', 'aria-label': `pool ${p.name}` },
      el('h3', {}, el('span', { text: p.name }), badge(state)),
      el('p', { class: 'muted', text: p.transport }),
      el('p', { text: `GPUs: ${p.gpus.length ? p.gpus.join(', ') : 'none'}` }),
      el('p', { text: `workers: ${p.workers} · planned ${bytes(p.planned_bytes)} of ${bytes(p.max_memory_bytes)}` }),
      p.last_error ? el('p', { class: 'error', text: p.last_error }) : null,
      el('button', {
        type: 'button', class: 'small quiet', text: verb === 'drain' ? 'Drain pool' : 'Undrain pool',
        onclick: () => act(`/v2/pools/${encodeURIComponent(p.name)}/${verb}`, `${verb} pool ${p.name}`),
      }));
  });
  // Rebuild only when something changed, so a focused button keeps its focus.
  const sig = JSON.stringify(fleet.pools);
  if (box.dataset.sig !== sig) {
    box.replaceChildren(...cards);
    box.dataset.sig = sig;
  }
}

function render() {
  const t = live.tick;
  if (!t) return;
  const s = t.sample;
  setCell($('ov-workers'), `${s.workers_ready} / ${s.workers_total}`);
  setCell($('ov-slots'), `${s.slots_busy} / ${s.slots_total}`);
  setCell($('ov-queue'), `${s.queue_interactive} / ${s.queue_batch}`);
  setCell($('ov-running'), String(s.running));
  setCell($('ov-tps'), num(Math.round(s.tokens_per_sec * 10) / 10));
  setCell($('ov-ttft'), `${ms(s.ttft_p50_ms)} / ${ms(s.ttft_p95_ms)}`);
  for (const c of charts) c.update(live.history);
  pools(t.fleet);
  syncRows($('ov-workers-table').tBodies[0], t.workers, (w) => w.worker_id, buildWorker, updateWorker);
  $('ov-no-workers').hidden = t.workers.length > 0;
}

export const overview = {
  init() {
    charts = [
      new LineChart($('chart-tps'), [{ key: 'tokens_per_sec', label: 'tok/s', color: '--c1' }]),
      new LineChart($('chart-ttft'), [
        { key: 'ttft_p50_ms', label: 'p50', color: '--c1' },
        { key: 'ttft_p95_ms', label: 'p95', color: '--c2' },
      ]),
      new LineChart($('chart-queue'), [
        { key: 'queue_interactive', label: 'interactive', color: '--c1' },
        { key: 'queue_batch', label: 'batch', color: '--c3' },
      ]),
    ];
  },
  show() {
    render();
  },
  hide() {},
  onTick() {
    render();
  },
};
