// Playground: chat with a served model through the OpenAI-compatible API
// (POST /v1/chat/completions, stream: true), token by token, with the sampling and constraint
// options the API takes; shows TTFT and tok/s (measured here) and the usage the API reports.

import { json, sse, isAbort } from './api.js';
import { $, el, num, setCell } from './util.js';
import { workerModels } from './models.js';

let history = [];
let ctl = null;
let modelsKey = null;

async function loadModels() {
  const sel = $('pg-model');
  try {
    const caps = await json('/v2/meta/capabilities');
    const keep = sel.value;
    const ids = caps.models.map((m) => m.model);
    sel.replaceChildren(...ids.map((id) => el('option', { value: id, text: id })));
    if (ids.includes(keep)) sel.value = keep;
    $('pg-send').disabled = ids.length === 0 || ctl !== null;
    if (!ids.length) setCell($('pg-error'), 'No model is served yet.');
    else if ($('pg-error').textContent === 'No model is served yet.') setCell($('pg-error'), '');
  } catch (e) {
    setCell($('pg-error'), `Models: ${e.message}`);
  }
}

function stats(v) {
  for (const [id, text] of Object.entries(v)) setCell($(id), text);
}

/** The request body for the conversation so far plus `content`; throws on a bad schema. */
export function body(content) {
  const b = {
    model: $('pg-model').value,
    messages: [],
    stream: true,
    stream_options: { include_usage: true },
  };
  const system = $('pg-system').value.trim();
  if (system) b.messages.push({ role: 'system', content: system });
  b.messages.push(...history, { role: 'user', content });
  const temp = $('pg-temp').value;
  if (temp !== '') b.temperature = Number(temp);
  const max = $('pg-max').value;
  if (max !== '') b.max_tokens = Number(max);
  const seed = $('pg-seed').value;
  if (seed !== '') b.seed = Number(seed);
  const fmt = $('pg-format').value;
  if (fmt === 'json_object') b.response_format = { type: 'json_object' };
  if (fmt === 'json_schema') {
    let schema;
    try {
      schema = JSON.parse($('pg-schema').value);
    } catch (e) {
      throw new Error(`The JSON schema is not valid JSON: ${e.message}`);
    }
    b.response_format = { type: 'json_schema', json_schema: { name: 'playground', schema } };
  }
  return b;
}

function message(role, text) {
  const t = el('p', { class: 'text', text });
  const m = el('div', { class: `msg ${role}` }, el('div', { class: 'who', text: role }), t);
  $('pg-log').append(m);
  return t;
}

function nearBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}

function setBusy(on) {
  $('pg-send').disabled = on;
  $('pg-stop').disabled = !on;
  $('pg-log').setAttribute('aria-busy', on ? 'true' : 'false');
}

async function send(e) {
  if (e) e.preventDefault();
  if (ctl) return;
  const input = $('pg-input');
  const content = input.value.trim();
  if (!content) {
    setCell($('pg-error'), 'Type a message first.');
    return;
  }
  let req;
  try {
    req = body(content);
  } catch (err) {
    setCell($('pg-error'), err.message);
    return;
  }
  setCell($('pg-error'), '');
  input.value = '';
  const box = $('pg-log');
  message('user', content);
  const out = message('assistant', '');
  box.scrollTop = box.scrollHeight;
  box.dataset.state = 'streaming';
  stats({ 'pg-ttft': '…', 'pg-tps': '…', 'pg-in': '…', 'pg-out': '0', 'pg-cached': '…', 'pg-finish': '…' });
  ctl = new AbortController();
  setBusy(true);
  const t0 = performance.now();
  let first = null;
  let chunks = 0;
  let text = '';
  let finish = null;
  let usage = null;
  let state = 'done';
  try {
    await sse('/v1/chat/completions', {
      method: 'POST',
      body: req,
      signal: ctl.signal,
      onEvent(_type, data) {
        if (data === '[DONE]') return;
        const chunk = JSON.parse(data);
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) return;
        if (choice.finish_reason) finish = choice.finish_reason;
        const piece = choice.delta && choice.delta.content;
        if (!piece) return;
        const follow = nearBottom(box);
        if (first === null) {
          first = performance.now();
          setCell($('pg-ttft'), `${Math.round(first - t0)} ms`);
        }
        chunks += 1;
        text += piece;
        out.append(piece);
        const secs = (performance.now() - first) / 1000;
        setCell($('pg-out'), String(chunks));
        if (secs > 0.2) setCell($('pg-tps'), num(Math.round((chunks / secs) * 10) / 10));
        if (follow) box.scrollTop = box.scrollHeight;
      },
    });
    if (ctl.signal.aborted) state = 'stopped';
  } catch (err) {
    state = isAbort(err) ? 'stopped' : 'error';
    if (state === 'error') setCell($('pg-error'), err.message);
  }
  const end = performance.now();
  if (usage) {
    const out = usage.completion_tokens;
    const secs = first !== null ? (end - first) / 1000 : 0;
    stats({
      'pg-in': String(usage.prompt_tokens),
      'pg-out': String(out),
      'pg-cached': String((usage.prompt_tokens_details && usage.prompt_tokens_details.cached_tokens) || 0),
      'pg-tps': out > 1 && secs > 0 ? num(Math.round(((out - 1) / secs) * 10) / 10) : '–',
    });
  } else {
    stats({ 'pg-in': '–', 'pg-cached': '–' });
  }
  if (first === null) setCell($('pg-ttft'), '–');
  setCell($('pg-finish'), state === 'done' ? finish || '–' : state);
  if (text) history.push({ role: 'user', content }, { role: 'assistant', content: text });
  box.dataset.state = state;
  ctl = null;
  setBusy(false);
  input.focus();
}

function clear() {
  if (ctl) ctl.abort();
  history = [];
  $('pg-log').replaceChildren();
  $('pg-log').dataset.state = 'idle';
  stats({ 'pg-ttft': '–', 'pg-tps': '–', 'pg-in': '–', 'pg-out': '–', 'pg-cached': '–', 'pg-finish': '–' });
  setCell($('pg-error'), '');
}

export const playground = {
  init() {
    $('pg-send-form').addEventListener('submit', send);
    $('pg-stop').addEventListener('click', () => ctl && ctl.abort());
    $('pg-clear').addEventListener('click', clear);
    $('pg-input').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send(e);
    });
    $('pg-format').addEventListener('change', () => {
      const schema = $('pg-format').value === 'json_schema';
      $('pg-schema').hidden = !schema;
      $('pg-schema-label').hidden = !schema;
    });
  },
  show() {
    modelsKey = workerModels();
    loadModels();
  },
  hide() {},
  onTick() {
    const key = workerModels();
    if (key !== modelsKey) {
      modelsKey = key;
      loadModels();
    }
  },
};
