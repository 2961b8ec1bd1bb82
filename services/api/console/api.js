// The public HTTP API as the console calls it. The server key lives in this tab's
// sessionStorage and travels only in the Authorization header, never in a URL; every request
// names the organization; errors arrive as problem+json and are thrown as ApiError.

const KEY = 'roster.key';
const ORG = 'roster.org';
const ORGS = 'roster.orgs';

// The server's root, wherever the console is mounted (`…/console/api.js` → `…/`).
const root = new URL('../', import.meta.url);

/** A problem (RFC 9457) from the server, or one the console made for a network failure. */
export class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || 'Request failed');
    this.problem = problem;
    this.status = problem.status;
    this.code = problem.code;
  }
}

/** What this tab keeps: the key, the organization, and the organizations used. */
export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
  get org() { return sessionStorage.getItem(ORG) || 'default'; },
  set org(value) {
    sessionStorage.setItem(ORG, value);
    const known = new Set(session.orgs);
    known.add(value);
    sessionStorage.setItem(ORGS, JSON.stringify([...known]));
  },
  get orgs() {
    try { return JSON.parse(sessionStorage.getItem(ORGS)) || ['default']; } catch { return ['default']; }
  },
};

// The highest log position this tab has written: reads wait for the read models to reach
// it (x-roster-min-position), so a page shows the console's own writes at once.
let written = 0;

/** Notes a position this tab caused (a write's answer). */
export function saw(position) {
  const n = Number(position);
  if (Number.isFinite(n) && n > written) written = n;
}

function url(path, query = {}) {
  const target = new URL(path.replace(/^\//, ''), root);
  for (const [name, value] of Object.entries(query)) {
    for (const one of [].concat(value)) {
      if (one !== undefined && one !== null && one !== '') target.searchParams.append(name, one);
    }
  }
  return target;
}

function headers(extra = {}) {
  const h = new Headers(extra);
  h.set('authorization', `Bearer ${session.key}`);
  h.set('x-organization-id', session.org);
  return h;
}

/** The problem in a failed response, or one made from its status. */
async function problemOf(response) {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && (body.title || body.detail)) return body;
  } catch { /* not JSON */ }
  return { title: `HTTP ${response.status}`, status: response.status, detail: text.slice(0, 300) };
}

function networkProblem(error) {
  return new ApiError({
    title: 'The server did not answer',
    status: 0,
    code: 'network',
    detail: String(error && error.message ? error.message : error),
  });
}

/**
 * Calls the API. Options: `query` (values may be arrays), `body` (sent as JSON), `ifMatch`
 * (a user version). Resolves to the JSON body, null for 204, or the Response for other
 * media types; rejects with ApiError.
 */
export async function api(method, path, { query, body, ifMatch } = {}) {
  const h = headers();
  if (body !== undefined) h.set('content-type', 'application/json');
  if (ifMatch !== undefined) h.set('if-match', `"${ifMatch}"`);
  if (method === 'GET' && written > 0) h.set('x-roster-min-position', String(written));
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (error) {
    throw networkProblem(error);
  }
  saw(response.headers.get('x-roster-position'));
  if (!response.ok) throw new ApiError(await problemOf(response));
  if (response.status === 204) return null;
  // JSON bodies are parsed; anything else (an export's NDJSON) is the caller's to read.
  const type = (response.headers.get('content-type') || '').split(';')[0].trim();
  return type === 'application/json' || type.endsWith('+json') ? response.json() : response;
}

export const get = (path, query) => api('GET', path, { query });

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
});

/** Splits a text/event-stream into events ({id, type, data}); returns the unparsed rest. */
function parseEvents(buffer, pending, emit) {
  let newline;
  while ((newline = buffer.indexOf('\n')) >= 0) {
    const line = buffer.slice(0, newline).replace(/\r$/, '');
    buffer = buffer.slice(newline + 1);
    if (line === '') {
      if (pending.data !== undefined) emit({ ...pending });
      for (const k of Object.keys(pending)) delete pending[k];
    } else if (!line.startsWith(':')) {
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') pending.data = pending.data === undefined ? value : `${pending.data}\n${value}`;
      else if (field === 'id') pending.id = value;
      else if (field === 'event') pending.type = value;
    }
  }
  return buffer;
}

/**
 * Follows `GET /v1/events/stream` with fetch (the key in a header, not the URL), calling
 * `onEvent(event)` with each parsed event of the log and `onState(state, error)` with
 * `live`, `reconnecting` or `stopped`. After a dropped connection it reconnects with
 * `Last-Event-ID`, so nothing is missed or repeated. Runs until `signal` aborts.
 */
export async function followEvents(query, onEvent, onState, signal) {
  let last = null;
  while (!signal.aborted) {
    try {
      const h = headers({ accept: 'text/event-stream' });
      if (last !== null) h.set('last-event-id', last);
      const response = await fetch(url('/v1/events/stream', query), { headers: h, signal, cache: 'no-store' });
      if (!response.ok) {
        const error = new ApiError(await problemOf(response));
        onState('stopped', error);
        if (response.status < 500) return;
        throw error;
      }
      onState('live');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      const pending = {};
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = parseEvents(buffer + value, pending, (raw) => {
          last = raw.id ?? last;
          onEvent(JSON.parse(raw.data));
        });
      }
      if (!signal.aborted) onState('reconnecting');
    } catch (error) {
      if (signal.aborted) return;
      onState('reconnecting', error instanceof ApiError ? error : networkProblem(error));
    }
    await sleep(1000, signal);
  }
}
