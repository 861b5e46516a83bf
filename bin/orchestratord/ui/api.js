// Talking to orchestratord: the bearer token (session storage only, never in a URL), JSON
// calls with the API's error envelope, and an SSE reader over fetch() (EventSource cannot send
// an Authorization header).

const TOKEN_KEY = 'llorch.dashboard.token';

/** The token of this tab, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An API error: HTTP status, stable code, message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
/** Called when a call answers 401 (the token was revoked or is wrong). */
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

function headers(extra) {
  const h = new Headers(extra || {});
  const t = token();
  if (t) h.set('Authorization', `Bearer ${t}`);
  return h;
}

async function failure(resp) {
  let code = `HTTP_${resp.status}`;
  let message = resp.statusText || 'request failed';
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) {
    // not JSON: keep the status line
  }
  if (resp.status === 401) onUnauthorized();
  return new ApiError(resp.status, code, message);
}

/** fetch() with the token; throws ApiError unless 2xx. */
export async function call(path, { method = 'GET', body, signal, accept } = {}) {
  const h = headers({ accept: accept || 'application/json' });
  const init = { method, headers: h, signal, cache: 'no-store' };
  if (body !== undefined) {
    h.set('content-type', 'application/json');
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  return resp;
}

/** A JSON call; null for 204. */
export async function json(path, opts) {
  const resp = await call(path, opts);
  if (resp.status === 204) return null;
  return resp.json();
}

/**
 * Read a server-sent event stream: `onEvent(type, data, id)` per event. Resolves when the
 * stream ends; rejects on HTTP errors; an abort through `signal` resolves quietly.
 */
export async function sse(path, { method = 'GET', body, signal, onEvent }) {
  let resp;
  try {
    resp = await call(path, { method, body, signal, accept: 'text/event-stream' });
  } catch (e) {
    if (isAbort(e)) return;
    throw e;
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let type = '';
  let data = [];
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length) onEvent(type || 'message', data.join('\n'), id);
          type = '';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') type = val;
        else if (field === 'data') data.push(val);
        else if (field === 'id') id = val;
      }
    }
  } catch (e) {
    if (isAbort(e)) return;
    throw e;
  } finally {
    reader.releaseLock();
  }
}

/** Whether `e` is the rejection of an aborted fetch or read (abort() without a reason). */
export function isAbort(e) {
  return Boolean(e) && e.name === 'AbortError';
}
