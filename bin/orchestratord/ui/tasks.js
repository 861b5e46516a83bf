// Tasks: the live list (refetched from GET /v2/tasks only when the stream says it changed),
// and a task's page, which replays its event stream as an observer (leaving the page does not
// cancel the task) and cancels it through the API.

import { json, sse } from './api.js';
import { $, el, badge, clock, live, ms, say, setCell, syncRows } from './util.js';

const LIMIT = 100;
let lastKey = null;
let loading = false;
let again = false;

function taskCells(t) {
  return [
    badge(t.state),
    t.model,
    t.worker_id || '–',
    `${t.usage.tokens_in} / ${t.usage.tokens_out}`,
    ms(t.timings.ttft_ms),
    ms(t.finished_at_ms ? t.finished_at_ms - t.created_at_ms : null),
    clock(t.created_at_ms),
  ];
}

function buildTask(t) {
  const tr = el('tr', {}, el('td', {}, el('a', { href: `#/tasks/${encodeURIComponent(t.task_id)}` },
    el('code', { text: t.task_id }))));
  for (let i = 0; i < 7; i++) tr.append(el('td', { class: i >= 3 && i <= 5 ? 'num' : null }));
  return tr;
}

function updateTask(tr, t) {
  taskCells(t).forEach((v, i) => setCell(tr.cells[i + 1], v));
}

async function load() {
  if (loading) {
    again = true;
    return;
  }
  loading = true;
  try {
    const state = $('tasks-filter').value;
    const q = state ? `&state=${encodeURIComponent(state)}` : '';
    const list = await json(`/v2/tasks?limit=${LIMIT}${q}`);
    syncRows($('tasks-table').tBodies[0], list.tasks, (t) => t.task_id, buildTask, updateTask);
    setCell($('tasks-count'), `${list.tasks.length} task${list.tasks.length === 1 ? '' : 's'}` +
      (list.tasks.length === LIMIT ? ` (the newest ${LIMIT})` : ''));
  } catch (e) {
    say(`Tasks: ${e.message}`, true);
  } finally {
    loading = false;
    if (again) {
      again = false;
      load();
    }
  }
}

export const tasks = {
  init() {
    $('tasks-filter').addEventListener('change', load);
  },
  show() {
    lastKey = live.tick ? live.tick.tasks_key : null;
    load();
  },
  hide() {},
  onTick() {
    if (live.tick && live.tick.tasks_key !== lastKey) {
      lastKey = live.tick.tasks_key;
      load();
    }
  },
};

// ---- one task ----

let page = null;

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

function fact(label, value) {
  return el('div', {}, el('dt', { text: label }), el('dd', { text: value }));
}

function renderStatus(st) {
  const p = page;
  p.status = st;
  setCell($('task-state'), st.state);
  $('task-state').className = `badge s-${st.state}`;
  $('task-cancel').disabled = TERMINAL.has(st.state);
  const end = p.end || {};
  const rate = end.decode_tokens_per_sec != null ? end.decode_tokens_per_sec : p.rate;
  $('task-facts').replaceChildren(
    fact('Model', st.model),
    fact('Priority', st.priority),
    fact('Worker', st.worker_id || '–'),
    fact('Attempts', String(st.attempts)),
    fact('Created', clock(st.created_at_ms)),
    fact('Queue time', ms(st.timings.queue_time_ms)),
    fact('TTFT', ms(st.timings.ttft_ms)),
    fact('E2E', ms(st.finished_at_ms ? st.finished_at_ms - st.created_at_ms : null)),
    fact('Tokens in / out', `${st.usage.tokens_in} / ${st.usage.tokens_out}`),
    fact('Tokens cached', end.tokens_cached != null ? String(end.tokens_cached) : '–'),
    fact('tok/s', rate != null ? rate.toFixed(1) : '–'),
    fact(st.error ? 'Error' : 'Stop reason', st.error ? `${st.error.code}: ${st.error.message}` : st.stop_reason || '–'),
  );
}

async function refresh() {
  const p = page;
  try {
    const st = await json(`/v2/tasks/${encodeURIComponent(p.id)}`);
    if (page === p) renderStatus(st);
  } catch (e) {
    if (page === p) setCell($('task-msg'), e.message);
  }
}

function summary(type, ev) {
  switch (type) {
    case 'queued': return `position ${ev.queue_position}${ev.phase ? ` (${ev.phase} on ${ev.pool})` : ''}`;
    case 'started': return `on ${ev.worker_id}, attempt ${ev.attempt}, ${ev.tokens_in} prompt tokens`;
    case 'metrics': return `${ev.tokens_out} tokens, ${ev.tokens_per_sec.toFixed(1)} tok/s`;
    case 'end': return `${ev.stop_reason}, ${ev.tokens_out} tokens, e2e ${ms(ev.e2e_ms)}`;
    case 'error': return `${ev.code}: ${ev.message}`;
    default: return '';
  }
}

function onEvent(p, type, data, id) {
  if (page !== p) return;
  const ev = JSON.parse(data);
  const list = $('task-events');
  if (type === 'token') {
    $('task-output').append(ev.t);
    const lastLi = list.lastElementChild;
    if (lastLi && lastLi.dataset.tokens) {
      const n = Number(lastLi.dataset.tokens) + 1;
      lastLi.dataset.tokens = String(n);
      lastLi.textContent = `#${lastLi.dataset.first}–${id} token ×${n}`;
    } else {
      list.append(el('li', { 'data-tokens': '1', 'data-first': id, text: `#${id} token ×1` }));
    }
    return;
  }
  list.append(el('li', { text: `#${id} ${type}: ${summary(type, ev)}` }));
  if (type === 'metrics') p.rate = ev.tokens_per_sec;
  if (type === 'end') p.end = ev;
  if (type === 'started' || type === 'end' || type === 'error') refresh();
}

async function cancel() {
  const p = page;
  $('task-cancel').disabled = true;
  try {
    await json(`/v2/tasks/${encodeURIComponent(p.id)}/cancel`, { method: 'POST' });
    setCell($('task-msg'), 'Cancel requested.');
  } catch (e) {
    setCell($('task-msg'), `Cancel failed: ${e.message}`);
  }
  refresh();
}

export const taskPage = {
  init() {
    $('task-cancel').addEventListener('click', cancel);
  },
  show(id) {
    const p = { id, ctl: new AbortController(), status: null, end: null, rate: null };
    page = p;
    setCell($('task-id'), id);
    setCell($('task-state'), '…');
    setCell($('task-msg'), '');
    $('task-cancel').disabled = true;
    $('task-output').replaceChildren();
    $('task-events').replaceChildren();
    $('task-facts').replaceChildren();
    refresh();
    sse(`/v2/tasks/${encodeURIComponent(id)}/events?observe=true`, {
      signal: p.ctl.signal,
      onEvent: (type, data, evId) => onEvent(p, type, data, evId),
    }).catch((e) => {
      if (page === p) setCell($('task-msg'), `Events: ${e.message}`);
    });
  },
  hide() {
    if (page) page.ctl.abort();
    page = null;
  },
  onTick() {},
};
