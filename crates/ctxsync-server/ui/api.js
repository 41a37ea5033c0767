// The JSON API and the event stream, with the tab's bearer token.
//
// The event stream is read with fetch() streaming rather than EventSource, because
// EventSource cannot send an Authorization header and the token must not go in a URL.
// It reconnects on its own, resuming with Last-Event-ID, so nothing is lost or repeated.

const KEY = 'ctxsync.token';

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Errors and recoveries of every call, for the page's banner. */
export const health = new EventTarget();

function report(error) {
  health.dispatchEvent(new CustomEvent(error ? 'failure' : 'success', { detail: error }));
}

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${token.get() ?? ''}`, ...extra };
}

export async function api(path, { method = 'GET', body, signal, quiet = false } = {}) {
  const headers = authHeaders({ Accept: 'application/json' });
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    const error = new ApiError(0, 'network', 'the server cannot be reached');
    if (!quiet) report(error);
    throw error;
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data?.error ?? `http_${response.status}`,
      data?.message ?? response.statusText);
    error.body = data;
    if (!quiet) report(error);
    throw error;
  }
  if (!quiet) report(null);
  return data;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Parses one SSE block ("event: x\nid: 3\ndata: {...}"); null for a comment. */
export function parseBlock(block) {
  let event = 'message';
  let id = null;
  const data = [];
  for (const raw of block.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'id') id = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return null;
  return { event, id, data: data.join('\n') };
}

/**
 * Follows a context's events from revision `since`. `onEvents(batch)` gets each chunk's
 * parsed events ({event, id, data: object}); `onState({state, attempt, last})` gets
 * live / lost / denied / gone. Returns {close()}.
 */
export function follow(context, since, { onEvents, onState }) {
  let last = since;
  let stopped = false;
  let controller = null;
  let attempt = 0;
  const url = `/v1/contexts/${encodeURIComponent(context)}/events`;

  async function once() {
    controller = new AbortController();
    const headers = authHeaders({ Accept: 'text/event-stream' });
    if (last !== null && last !== undefined) headers['Last-Event-ID'] = String(last);
    const response = await fetch(url, { headers, signal: controller.signal, cache: 'no-store' });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch { body = null; }
      const error = new ApiError(response.status, body?.error ?? 'http', body?.message ?? response.statusText);
      if (response.status === 401 || response.status === 403 || response.status === 404) {
        report(error);
        onState({ state: response.status === 404 ? 'gone' : 'denied', error, last });
        stopped = true;
        return;
      }
      throw error;
    }
    attempt = 0;
    report(null);
    onState({ state: 'live', last });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const batch = [];
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const parsed = parseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!parsed) continue;
        try {
          parsed.data = JSON.parse(parsed.data);
        } catch {
          continue;
        }
        if (parsed.event === 'revision' && parsed.id !== null) last = Number(parsed.id);
        if (parsed.event === 'resync') last = parsed.data.revision;
        batch.push(parsed);
      }
      if (batch.length) onEvents(batch);
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch (e) {
        if (stopped) return;
      }
      if (stopped) return;
      attempt += 1;
      onState({ state: 'lost', attempt, last });
      await sleep(Math.min(4000, 200 * 2 ** Math.min(attempt - 1, 5)));
    }
  })();

  return {
    close() {
      stopped = true;
      controller?.abort();
    },
    get last() {
      return last;
    },
  };
}
