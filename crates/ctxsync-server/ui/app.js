// The dashboard's shell: sign-in, the page router (#/page/context), the context picker,
// the error banner and keyboard shortcuts. Each page module exports
// mount(root, app) -> unmount().

import { api, health, token, ApiError } from './api.js';
import { clear, h } from './dom.js';
import * as overview from './overview.js';
import * as context from './context.js';
import * as agents from './agents.js';
import * as conflicts from './conflicts.js';
import * as trends from './trends.js';
import * as agentsync from './agentsync.js';

const PAGES = { overview, context, agents, conflicts, trends, agentsync };
const ORDER = ['overview', 'context', 'agents', 'conflicts', 'trends', 'agentsync'];
/** Pages about the server as a whole, not one context. */
const GLOBAL = ['overview', 'agentsync'];

const $ = (id) => document.getElementById(id);

const app = {
  identity: null,
  contexts: [],
  context: null,
  /** Whether the token may write (agents and admins; viewers only read). */
  get canWrite() {
    return this.identity !== null && this.identity.role !== 'viewer';
  },
  go(page, ctx = this.context) {
    location.hash = ctx && !GLOBAL.includes(page) ? `#/${page}/${encodeURIComponent(ctx)}` : `#/${page}`;
  },
  /** Shows a message in the banner ('error', 'warn' or 'ok'); null hides it. */
  banner(kind, text) {
    const banner = $('banner');
    if (!kind) {
      banner.hidden = true;
      banner.dataset.kind = '';
      return;
    }
    banner.hidden = false;
    banner.dataset.kind = kind;
    banner.textContent = text;
    if (kind === 'ok') {
      // Good news fades; trouble stays until it is over.
      setTimeout(() => {
        if (banner.dataset.kind === 'ok' && banner.textContent === text) app.banner(null);
      }, 6000);
    }
  },
};
window.ctxsyncApp = app;

let unmount = null;
let streamTrouble = false;
/** While the store is down: the timer of the next /readyz poll. */
let storeDown = null;

/** Polls the unauthenticated /readyz every 2 s until the store takes writes again, so
 * the banner says so however the page is used meanwhile (reads may still work). */
function watchStore() {
  if (storeDown !== null) return;
  const poll = async () => {
    let why = null;
    try {
      const response = await fetch('/readyz', { cache: 'no-store' });
      if (!response.ok) why = (await response.json().catch(() => null))?.message ?? `answered ${response.status}`;
    } catch {
      why = 'the server cannot be reached';
    }
    if (why === null) {
      storeDown = null;
      document.body.dataset.store = 'ready';
      app.banner('ok', 'The store is available again.');
      return;
    }
    app.banner('error', `The store is unavailable: ${why}. Retrying…`);
    storeDown = setTimeout(poll, 2000);
  };
  document.body.dataset.store = 'down';
  storeDown = setTimeout(poll, 2000);
}

function route() {
  const [, page = 'overview', ctx] = location.hash.split('/');
  return { page: PAGES[page] ? page : 'overview', ctx: ctx ? decodeURIComponent(ctx) : null };
}

function render() {
  if (!app.identity) return;
  const { page, ctx } = route();
  if (ctx && app.contexts.includes(ctx)) app.context = ctx;
  if (!app.context && app.contexts.length) app.context = app.contexts[0];
  const select = $('context-select');
  if (app.context) select.value = app.context;
  for (const link of document.querySelectorAll('#nav a')) {
    const name = link.dataset.page;
    link.href = GLOBAL.includes(name) || !app.context ? `#/${name}` : `#/${name}/${encodeURIComponent(app.context)}`;
    if (name === page) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  unmount?.();
  unmount = null;
  const root = clear($('page'));
  root.dataset.page = page;
  if (!GLOBAL.includes(page) && !app.context) {
    root.append(h('p', { text: 'There is no context yet (ctxsync init, or PUT /v1/contexts/NAME).' }));
    return;
  }
  unmount = PAGES[page].mount(root, app);
}

async function loadContexts() {
  const list = await api('/v1/contexts');
  app.contexts = list.contexts.map((c) => c.context);
  const select = clear($('context-select'));
  for (const name of app.contexts) select.append(h('option', { value: name, text: name }));
}

function showLogin(message) {
  unmount?.();
  unmount = null;
  clear($('page'));
  app.identity = null;
  $('login').hidden = false;
  $('logout').hidden = true;
  $('whoami').textContent = '';
  const error = $('login-error');
  error.hidden = !message;
  error.textContent = message ?? '';
  $('token-input').focus();
}

async function signIn() {
  try {
    app.identity = await api('/v1/whoami', { quiet: true });
  } catch (e) {
    const refused = e instanceof ApiError && e.status === 401;
    token.clear();
    showLogin(refused ? `That token was refused: ${e.message}` : `Cannot sign in: ${e.message}`);
    return;
  }
  $('login').hidden = true;
  $('logout').hidden = false;
  $('whoami').textContent = `${app.identity.agent} (${app.identity.role})`;
  try {
    await loadContexts();
  } catch {
    // The banner says why; the overview retries.
  }
  render();
}

health.addEventListener('failure', (event) => {
  const error = event.detail;
  if (error.status === 401) {
    token.clear();
    showLogin(`The token no longer works (revoked?): ${error.message}. Sign in again.`);
    app.banner('error', 'Signed out: the token was refused.');
  } else if (error.status === 503) {
    app.banner('error', `The store is unavailable: ${error.message}. Retrying…`);
    watchStore();
  } else if (error.status === 0) {
    app.banner('error', 'The server cannot be reached. Retrying…');
  }
});
health.addEventListener('success', () => {
  const kind = $('banner').dataset.kind;
  if (kind === 'error' && app.identity && !streamTrouble && storeDown === null) app.banner(null);
});

/** Pages call this with their stream's state, so the banner says when it is lost. */
app.streamState = (state) => {
  if (state.state === 'lost') {
    streamTrouble = true;
    app.banner('warn', `Live stream lost (attempt ${state.attempt}); reconnecting from revision ${state.last}…`);
  } else if (state.state === 'live' && streamTrouble) {
    streamTrouble = false;
    app.banner('ok', `Live again; caught up from revision ${state.last}.`);
  } else if (state.state === 'gone') {
    app.banner('error', 'This context no longer exists.');
  }
};

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('token-input').value.trim();
  if (!value) return;
  token.set(value);
  $('token-input').value = '';
  signIn();
});
$('logout').addEventListener('click', () => {
  token.clear();
  app.banner(null);
  showLogin(null);
});
$('context-select').addEventListener('change', (event) => {
  app.context = event.target.value;
  app.go(route().page === 'overview' ? 'context' : route().page);
});
window.addEventListener('hashchange', render);
document.addEventListener('keydown', (event) => {
  const typing = ['INPUT', 'SELECT', 'TEXTAREA'].includes(document.activeElement?.tagName);
  if (typing || event.altKey || event.ctrlKey || event.metaKey || !app.identity) return;
  const index = Number(event.key) - 1;
  if (index >= 0 && index < ORDER.length) {
    app.go(ORDER[index]);
    $('main').focus();
  }
});

if (token.get()) signIn();
else showLogin(null);
