// Models: what is served (GET /v2/meta/capabilities, with the workers of each from the live
// stream), and with a fleet its deployments (live) and the catalog on each pool (GET /v2/pools).

import { json } from './api.js';
import { $, el, badge, live, say, setCell, syncRows } from './util.js';

let served = [];
let modelsKey = null;
let catalogLoaded = false;

function whereServed(model) {
  const ws = live.tick ? live.tick.workers.filter((w) => w.model === model || (w.aliases || []).includes(model)) : [];
  return ws.map((w) => (w.device ? `${w.worker_id} (${w.device})` : w.worker_id)).join(', ') || '–';
}

function renderServed() {
  syncRows($('models-table').tBodies[0], served, (m) => m.model,
    () => el('tr', {}, ...Array.from({ length: 6 }, (_, i) => el('td', { class: i >= 2 && i <= 4 ? 'num' : null }))),
    (tr, m) => {
      const c = tr.cells;
      setCell(c[0], m.model);
      setCell(c[1], (m.aliases || []).join(', ') || '–');
      setCell(c[2], String(m.context_length));
      setCell(c[3], String(m.workers_ready));
      setCell(c[4], String(m.slots_total));
      setCell(c[5], whereServed(m.model));
    });
  $('models-none').hidden = served.length > 0;
}

function renderFleet() {
  const fleet = live.tick && live.tick.fleet;
  $('models-fleet').hidden = !fleet;
  if (!fleet) return;
  syncRows($('deploy-table').tBodies[0], fleet.deployments, (d) => d.model,
    () => el('tr', {}, ...Array.from({ length: 5 }, (_, i) => el('td', { class: i === 2 ? 'num' : i === 4 ? 'reason' : null }))),
    (tr, d) => {
      const c = tr.cells;
      setCell(c[0], d.model);
      setCell(c[1], badge(d.state));
      setCell(c[2], `${d.replicas} (${d.min_replicas}–${d.max_replicas})`);
      setCell(c[3], d.phase ? `${d.phase}${d.phase_pool ? ` on ${d.phase_pool}` : ''}` : '–');
      setCell(c[4], d.last_error || '');
    });
  if (!catalogLoaded) loadCatalog();
}

async function loadCatalog() {
  catalogLoaded = true;
  try {
    const view = await json('/v2/pools');
    const rows = [];
    for (const p of view.pools) {
      for (const m of (p.inventory && p.inventory.models) || []) {
        rows.push({ key: `${p.name}/${m.id}`, pool: p.name, id: m.id, downloaded: m.downloaded });
      }
    }
    syncRows($('catalog-table').tBodies[0], rows, (r) => r.key,
      () => el('tr', {}, el('td'), el('td'), el('td')),
      (tr, r) => {
        setCell(tr.cells[0], r.pool);
        setCell(tr.cells[1], r.id);
        setCell(tr.cells[2], r.downloaded ? 'yes' : 'no');
      });
  } catch (e) {
    catalogLoaded = false;
    say(`Pools: ${e.message}`, true);
  }
}

async function loadServed() {
  try {
    served = (await json('/v2/meta/capabilities')).models;
    renderServed();
  } catch (e) {
    say(`Models: ${e.message}`, true);
  }
}

/** The models the workers of the latest tick serve, as a comparable string. */
export function workerModels() {
  if (!live.tick) return '';
  return [...new Set(live.tick.workers.map((w) => `${w.model}:${w.status}`))].sort().join(',');
}

export const models = {
  init() {},
  show() {
    modelsKey = workerModels();
    catalogLoaded = false;
    loadServed();
    renderFleet();
  },
  hide() {},
  onTick() {
    const key = workerModels();
    if (key !== modelsKey) {
      modelsKey = key;
      loadServed();
    } else {
      renderServed();
    }
    renderFleet();
  },
};
