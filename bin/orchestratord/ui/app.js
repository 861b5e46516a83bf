// The dashboard's entry: sign-in when the API wants a token, hash routing between the views,
// and the one live stream (GET /v2/dashboard/stream) every view reads from.

import { json, sse, token, setToken, setUnauthorizedHandler } from './api.js';
import { $, live } from './util.js';
import { overview } from './overview.js';
import { tasks, taskPage } from './tasks.js';
import { models } from './models.js';
import { playground } from './playground.js';

const VIEWS = { overview, tasks, task: taskPage, models, playground };
const HISTORY_MS = 15 * 60 * 1000;

let authRequired = false;
let current = null;
let stream = null;

function conn(text, cls) {
  const c = $('conn');
  if (c.textContent !== text) c.textContent = text;
  c.className = `conn ${cls || ''}`;
}

function signedIn() {
  return !authRequired || Boolean(token());
}

function hideViews() {
  if (current) VIEWS[current.name].hide();
  current = null;
  for (const v of document.querySelectorAll('.view')) v.hidden = true;
}

function showLogin(message) {
  stopLive();
  hideViews();
  live.history = [];
  live.tick = null;
  $('login').hidden = false;
  $('logout').hidden = true;
  $('login-error').textContent = message || '';
  conn('signed out', '');
  $('login-token').focus();
}

async function onLogin(e) {
  e.preventDefault();
  const t = $('login-token').value.trim();
  if (!t) {
    $('login-error').textContent = 'Enter the API token.';
    return;
  }
  setToken(t);
  try {
    await json('/v2/meta/capabilities');
  } catch (err) {
    setToken(null);
    $('login-error').textContent =
      err.status === 401 ? 'That token is not valid.' : `Cannot check the token: ${err.message}`;
    return;
  }
  $('login-token').value = '';
  start();
}

function logout() {
  setToken(null);
  showLogin('Signed out.');
}

function route() {
  if (!signedIn()) {
    showLogin();
    return;
  }
  const hash = location.hash.replace(/^#\/?/, '');
  const [first, ...rest] = hash.split('/');
  let name = VIEWS[first] ? first : 'overview';
  let arg = null;
  if (first === 'tasks' && rest.length) {
    name = 'task';
    arg = decodeURIComponent(rest.join('/'));
  }
  if (current && current.name === name && current.arg === arg) return;
  hideViews();
  const section = $(`view-${name}`);
  section.hidden = false;
  for (const a of document.querySelectorAll('[data-nav]')) {
    const on = a.dataset.nav === (name === 'task' ? 'tasks' : name);
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  current = { name, arg };
  VIEWS[name].show(arg);
}

function onTick() {
  if (current) VIEWS[current.name].onTick();
}

function stopLive() {
  if (stream) stream.abort();
  stream = null;
}

/** Read the live stream until stopped, reconnecting with backoff. */
async function startLive() {
  stopLive();
  const ctl = new AbortController();
  stream = ctl;
  let delay = 1000;
  while (!ctl.signal.aborted) {
    conn('connecting', '');
    try {
      await sse('/v2/dashboard/stream', {
        signal: ctl.signal,
        onEvent(type, data) {
          const msg = JSON.parse(data);
          if (type === 'snapshot') {
            live.everyMs = msg.sample_every_ms;
            live.history = msg.history;
            live.tick = msg.tick;
          } else if (type === 'tick') {
            live.history.push(msg.sample);
            const oldest = msg.sample.t_ms - HISTORY_MS;
            while (live.history.length && live.history[0].t_ms < oldest) live.history.shift();
            live.tick = msg;
          } else {
            return;
          }
          delay = 1000;
          conn('live', 'live');
          onTick();
        },
      });
    } catch (e) {
      if (e.status === 401) return;
    }
    if (ctl.signal.aborted) return;
    conn('reconnecting', 'down');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function start() {
  $('login').hidden = true;
  $('logout').hidden = !authRequired;
  startLive();
  route();
}

async function boot() {
  setUnauthorizedHandler(() => {
    if (authRequired && token()) {
      setToken(null);
      showLogin('The API refused the token; sign in again.');
    }
  });
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  for (const v of Object.values(VIEWS)) v.init();
  try {
    const resp = await fetch('/ui/boot.json', { cache: 'no-store' });
    authRequired = (await resp.json()).auth_required;
  } catch (_) {
    conn('orchestratord unreachable', 'down');
    return;
  }
  if (signedIn()) start();
  else showLogin();
}

boot();
