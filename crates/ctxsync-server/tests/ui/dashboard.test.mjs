// End-to-end tests of the /ui dashboard in headless Chromium, against a real
// `ctxsync serve` started by crates/ctxsync/tests/ui_browser.rs, which passes:
//   CTXSYNC_URL, CONTEXT, ADMIN_TOKEN, BUILDER_TOKEN, REVIEWER_TOKEN, VIEWER_TOKEN,
//   CHROMIUM (executable), OUT_DIR (screenshots).
// To cut the stream it prints "CTL stop" (the harness kills the server, writes two
// revisions with the CLI on the same store, answers "stopped") and then "CTL start"
// (same port again, "started"); "CTL break-store" deletes the running store's
// write-ahead log ("broken"), "CTL restart" restarts the server ("restarted"),
// "CTL revoke-viewer" revokes the viewer's token. Screenshots: page-N-NAME.png for each
// page, state-NAME.png for the states shown. Every check prints "ok - NAME" or throws
// (non-zero exit); figures print as "FIGURE". The benchmark is bench.mjs.

import { URL, call, check, controller, env, figure, firstPage, ok, run, shot, signIn } from './harness.mjs';

const CONTEXT = env('CONTEXT');
const TOKENS = { admin: env('ADMIN_TOKEN'), builder: env('BUILDER_TOKEN'), reviewer: env('REVIEWER_TOKEN'), viewer: env('VIEWER_TOKEN') };
const { control, close } = controller();

const push = (agent, changes, extra = {}) =>
  call('POST', `/v1/contexts/${CONTEXT}/push`, TOKENS[agent], { agent, summary: `${agent} writes`, changes, ...extra });

const feedRevisions = (page) => page.$$eval('#feed li', (rows) => rows.map((r) => Number(r.dataset.revision)));

async function tests(browser) {
  const page = await firstPage(browser);

  // 1. A wrong token shows the error and stays on the sign-in form.
  await page.goto(`${URL}/ui`);
  await signIn(page, 'not-a-token');
  await page.waitForSelector('#login-error:not([hidden])');
  const refused = await page.textContent('#login-error');
  check(/refused/.test(refused), `the error says the token was refused: ${refused}`);
  check(await page.isVisible('#login'), 'the sign-in form is still shown');
  await shot(page, 'state-login-wrong-token');
  ok('a wrong token shows the error');

  // 2. The right token signs in; the overview lists the context.
  await signIn(page, TOKENS.admin);
  await page.waitForSelector(`#contexts-table tr[data-context="${CONTEXT}"]`);
  check((await page.textContent('#whoami')).includes('lead (admin)'), 'whoami shows the token\'s agent');
  check(await page.evaluate(() => sessionStorage.getItem('ctxsync.token')) === TOKENS.admin, 'the token is kept for the tab');
  await page.waitForSelector('#store-state.good');
  await shot(page, 'page-1-overview');
  ok('log in with a token; the overview shows the context and the store ready');

  // 3. A push by another process appears in the live feed, without a reload.
  await page.goto(`${URL}/ui#/context/${CONTEXT}`);
  await page.waitForSelector('#stream-state[data-state="live"]');
  await page.evaluate(() => { window.notReloaded = true; });
  const sent = Date.now();
  const pushed = await push('builder', [{ path: 'project_state.ui_probe', to: 'hello' }], { level: 'critical', summary: 'probe from another process' });
  check(pushed.status === 200, `push answered ${pushed.status}`);
  const revision = pushed.body.revision;
  await page.waitForSelector(`#feed li[data-revision="${revision}"]`, { timeout: 10000 });
  figure('push to feed row (ms)', Date.now() - sent);
  check(await page.evaluate(() => window.notReloaded === true), 'the page was not reloaded');
  const row = await page.$(`#feed li[data-revision="${revision}"]`);
  const rowText = await row.textContent();
  check(rowText.includes('builder') && rowText.includes('probe from another process') && rowText.includes('project_state.ui_probe'),
    `the row has agent, summary and path: ${rowText}`);
  check((await row.getAttribute('class')).includes('critical'), 'the critical revision is marked');
  ok('a push by another process appears in the live feed without a reload, marked critical');

  // 4. The tree shows the field's last writer; the diff and the history search work.
  await page.waitForSelector(`#tree[data-revision="${revision}"] [data-pointer="/project_state/ui_probe"] .writer`, { state: 'attached' });
  const writer = await page.textContent('[data-pointer="/project_state/ui_probe"] .writer');
  check(writer.includes('builder') && writer.includes(`r${revision}`), `last writer: ${writer}`);
  await page.fill('#diff-from', String(revision - 1));
  await page.fill('#diff-to', String(revision));
  await page.click('#diff-go');
  await page.waitForSelector('#diff-table');
  const diffText = await page.textContent('#diff-table');
  check(diffText.includes('/project_state/ui_probe') && diffText.includes('"hello"'), `diff: ${diffText}`);
  await page.fill('#search-agent', 'builder');
  await page.fill('#search-path', 'ui_probe');
  await page.click('#search-go');
  await page.waitForSelector('#search-list li');
  const found = await page.$$eval('#search-list li', (rows) => rows.map((r) => r.querySelector('.agent').textContent));
  check(found.length >= 1 && found.every((a) => a === 'builder'), `search found ${found}`);
  await shot(page, 'page-2-context');
  ok('document tree with last writer, diff between revisions, history search');

  // 5. The agents page lists the writer with its presence.
  await page.goto(`${URL}/ui#/agents/${CONTEXT}`);
  await page.waitForSelector('#agents-table tr[data-agent="builder"]');
  await shot(page, 'page-3-agents');
  ok('the agents page lists the agents');

  // 6. An open conflict is resolved from the page; the context changes accordingly.
  check((await push('reviewer', [{ path: 'project_state.ui_probe', to: 'theirs' }])).status === 200, 'reviewer push');
  const deferred = await push('builder', [{ path: 'project_state.ui_probe', from: 'hello', to: 'mine' }], { strategy: 'defer' });
  check(deferred.status === 409, `the deferred push conflicts (${deferred.status})`);
  const id = deferred.body.conflicts[0].id;
  check(Number.isInteger(id), 'the conflict was stored');
  await page.goto(`${URL}/ui#/conflicts/${CONTEXT}`);
  const card = `#conflict-list article[data-id="${id}"]`;
  await page.waitForSelector(card);
  const sides = await page.textContent(card);
  check(sides.includes('"mine"') && sides.includes('"theirs"'), `both values side by side: ${sides}`);
  await shot(page, 'page-4-conflicts');
  await page.click(`${card} button.mine`);
  await page.waitForSelector('#resolve-outcome.good');
  await page.waitForSelector(card, { state: 'detached' });
  const after = await call('GET', `/v1/contexts/${CONTEXT}`, TOKENS.admin);
  check(after.body.document.project_state.ui_probe === 'mine', `the context has the stored change: ${after.body.document.project_state.ui_probe}`);
  const still = await call('GET', `/v1/contexts/${CONTEXT}/conflicts`, TOKENS.admin);
  check(!still.body.conflicts.some((c) => c.id === id), 'the conflict is no longer open');
  ok('an open conflict is resolved (mine) from the page and the context changes');

  // 7. The trends page draws its points from real samples.
  for (let i = 0; i < 5; i += 1) await push('reviewer', [{ path: 'project_state.ui_count', to: i }], { level: 'periodic' });
  await page.goto(`${URL}/ui#/trends/${CONTEXT}`);
  await page.click('button[data-window="1h"]');
  await page.waitForSelector('#plot-revisions circle[data-series="all"]');
  // Let any refresh in flight land, then compare with the samples the API gives.
  await page.waitForFunction(async (ctx) => {
    const plots = document.getElementById('plots');
    const token = sessionStorage.getItem('ctxsync.token');
    const t = await (await fetch(`/v1/contexts/${ctx}/trends?window=1h`, { headers: { Authorization: `Bearer ${token}` } })).json();
    const total = t.buckets.reduce((n, b) => n + b.revisions, 0);
    return Number(plots.dataset.revisions) === total;
  }, CONTEXT, { polling: 500, timeout: 15000 });
  const trends = (await call('GET', `/v1/contexts/${CONTEXT}/trends?window=1h`, TOKENS.admin)).body;
  const drawn = await page.$$eval('#plot-revisions circle[data-series="all"]', (cs) => cs.map((c) => Number(c.dataset.count)));
  const nonEmpty = trends.buckets.filter((b) => b.revisions > 0);
  const head = (await call('GET', `/v1/contexts/${CONTEXT}/head`, TOKENS.admin)).body.revision;
  check(drawn.length === nonEmpty.length, `revision points drawn ${drawn.length}, non-empty buckets ${nonEmpty.length}`);
  check(drawn.reduce((a, b) => a + b, 0) === head, `the points add up to every revision (${drawn} vs head ${head})`);
  const latencyPoints = await page.$$eval('#plot-latency circle[data-series="p95"]', (cs) => cs.length);
  const withLatency = trends.buckets.filter((b) => b.p95_ms !== null).length;
  check(latencyPoints === withLatency && withLatency > 0, `latency points ${latencyPoints} of ${withLatency} buckets`);
  const conflictPoints = await page.$$eval('#plot-trouble circle[data-series="conflicts"]', (cs) => cs.reduce((n, c) => n + Number(c.dataset.count), 0));
  check(conflictPoints >= 1, 'the deferred conflict is plotted');
  const syncsDrawn = await page.$$eval('#plot-syncs circle[data-series="all"]', (cs) => cs.map((c) => Number(c.dataset.count)));
  const pushes = trends.buckets.reduce((n, b) => n + b.pushes, 0);
  check(syncsDrawn.length === trends.buckets.filter((b) => b.pushes > 0).length, `sync points drawn ${syncsDrawn.length}`);
  check(syncsDrawn.reduce((a, b) => a + b, 0) === pushes && pushes >= 8, `the sync points add up to the sync log's ${pushes}`);
  const reviewerDrawn = await page.$$eval('#plot-agents circle[data-series="reviewer"]', (cs) => cs.reduce((n, c) => n + Number(c.dataset.count), 0));
  const reviewerMade = trends.buckets.reduce((n, b) => n + (b.by_agent.reviewer ?? 0), 0);
  check(reviewerDrawn === reviewerMade && reviewerMade >= 6, `the reviewer's series adds up to its ${reviewerMade} revisions (${reviewerDrawn})`);
  const trouble = await page.textContent('#agent-totals tr[data-agent="builder"] .trouble');
  check(Number(trouble) >= 1, `the builder's conflict is in the by-agent table (${trouble})`);
  figure('trends points drawn (revisions/latency)', `${drawn.length}/${latencyPoints}`);
  await shot(page, 'page-5-trends');
  ok(`the trends page draws ${drawn.length} revision points and ${latencyPoints} latency points from real samples`);

  // 8. The stream is cut (server restarted on the same port): the page shows it and
  // catches up without loss, including revisions made while it was down.
  await page.goto(`${URL}/ui#/context/${CONTEXT}`);
  await page.waitForSelector('#stream-state[data-state="live"]');
  await page.evaluate(() => {
    window.streamStates = [];
    window.bannerKinds = [];
    new MutationObserver(() => window.streamStates.push(document.getElementById('stream-state').dataset.state))
      .observe(document.getElementById('stream-state'), { attributes: true });
    new MutationObserver(() => window.bannerKinds.push(document.getElementById('banner').dataset.kind))
      .observe(document.getElementById('banner'), { attributes: true, attributeFilter: ['data-kind'] });
  });
  const before = (await call('GET', `/v1/contexts/${CONTEXT}/head`, TOKENS.admin)).body.revision;
  check((await control('stop')) === 'stopped', 'the test harness stopped the server');
  await page.waitForSelector('#stream-state[data-state="lost"]');
  await page.waitForSelector('#banner[data-kind="warn"]');
  await shot(page, 'state-stream-lost');
  check((await control('start')) === 'started', 'the test harness started the server again');
  const pushedAfter = await push('builder', [{ path: 'project_state.ui_after', to: 'back' }]);
  check(pushedAfter.status === 200, 'push after the restart');
  await page.waitForSelector(`#feed li[data-revision="${pushedAfter.body.revision}"]`, { timeout: 20000 });
  const states = await page.evaluate(() => window.streamStates);
  check(states.includes('lost') && states.at(-1) === 'live', `the page showed the lost stream, then live again: ${states}`);
  const seen = (await feedRevisions(page)).sort((a, b) => a - b);
  for (let r = before + 1; r <= pushedAfter.body.revision; r += 1) check(seen.includes(r), `revision ${r} is in the feed (${seen.slice(-12)})`);
  check(pushedAfter.body.revision >= before + 3, 'revisions were made while the server was down');
  check(new Set(seen).size === seen.length, 'no revision twice');
  const gaps = await page.evaluate(() => window.ctxsyncFeed.gaps);
  check(gaps === 0, `no gap in the feed (${gaps})`);
  const kinds = await page.evaluate(() => window.bannerKinds);
  check(kinds.includes('warn') && kinds.includes('ok'), `the banner said the stream was lost, then back: ${kinds}`);
  await shot(page, 'state-stream-recovered');
  ok('the stream is cut by a restart; the page shows it and catches up without loss');

  // 9. The store goes down under the running server (its write-ahead log deleted, which
  // the server detects: writes are refused with 503 and /readyz fails until the store is
  // reopened). The overview shows it, a write from the page gets the 503 in the banner,
  // which stays while the store is down, however the page is used; a restart reopens the
  // store, the banner says so, and the same write then goes through.
  const down = await push('builder', [{ path: 'project_state.ui_probe', from: 'not this', to: 'down' }], { strategy: 'defer' });
  check(down.status === 409, `a conflict to settle while the store is down (${down.status})`);
  const downId = down.body.conflicts[0].id;
  await page.goto(`${URL}/ui#/overview`);
  await page.waitForSelector('#store-state.good');
  check((await control('break-store')) === 'broken', 'the harness deleted the store\'s write-ahead log');
  await page.waitForSelector('#store-state.bad', { timeout: 15000 });
  const why = await page.textContent('#store-state');
  check(/write-ahead log/.test(why), `the overview says why the store is not ready: ${why}`);
  await page.goto(`${URL}/ui#/conflicts/${CONTEXT}`);
  const downCard = `#conflict-list article[data-id="${downId}"]`;
  await page.click(`${downCard} button.mine`);
  await page.waitForSelector('#resolve-outcome.error');
  await page.waitForSelector('#banner[data-kind="error"]');
  const banner = await page.textContent('#banner');
  check(/store is unavailable/.test(banner) && /write-ahead log/.test(banner), `the banner shows the 503: ${banner}`);
  await shot(page, 'state-store-down');
  // Reads still work (the overview loads, and says the store is not ready); the banner
  // stays until the store is ready again.
  await page.goto(`${URL}/ui#/overview`);
  await page.waitForSelector('#store-state.bad');
  check((await page.getAttribute('#banner', 'data-kind')) === 'error', 'the banner still shows the store down after a successful read');
  check(await page.evaluate(() => document.body.dataset.store) === 'down', 'the page polls the store\'s readiness');
  check((await control('restart')) === 'restarted', 'the harness restarted the server');
  await page.waitForSelector('#banner[data-kind="ok"]', { timeout: 20000 });
  check(/available again/.test(await page.textContent('#banner')), 'the banner says the store is back');
  check(await page.evaluate(() => document.body.dataset.store) === 'ready', 'the page knows the store is ready');
  await page.waitForSelector('#store-state.good');
  await page.goto(`${URL}/ui#/conflicts/${CONTEXT}`);
  await page.click(`${downCard} button.mine`);
  await page.waitForSelector('#resolve-outcome.good');
  const settled = await call('GET', `/v1/contexts/${CONTEXT}`, TOKENS.admin);
  check(settled.body.document.project_state.ui_probe === 'down', `the write went through after the restart: ${settled.body.document.project_state.ui_probe}`);
  ok('the store goes down: the 503 is shown on the page until it is back, then the write goes through');

  // 10. A narrow window and the keyboard: digits switch pages.
  await page.setViewportSize({ width: 390, height: 800 });
  await page.focus('body');
  await page.keyboard.press('5');
  await page.waitForSelector('#page[data-page="trends"]');
  await page.keyboard.press('2');
  await page.waitForSelector('#page[data-page="context"] #feed li');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no horizontal overflow in a narrow window (${overflow}px)`);
  await shot(page, 'state-narrow-context');
  await page.setViewportSize({ width: 1280, height: 900 });
  ok('keyboard shortcuts and a narrow window');

  // 11. A viewer token reads but cannot settle; a revoked token signs the page out.
  const viewer = await browser.newPage();
  await viewer.goto(`${URL}/ui`);
  await signIn(viewer, TOKENS.viewer);
  await viewer.waitForSelector('#contexts-table');
  const deferred2 = await push('builder', [{ path: 'project_state.ui_probe', from: 'nope', to: 'x' }], { strategy: 'defer' });
  check(deferred2.status === 409, 'second conflict');
  await viewer.goto(`${URL}/ui#/conflicts/${CONTEXT}`);
  await viewer.waitForSelector(`#conflict-list article[data-id="${deferred2.body.conflicts[0].id}"] button.mine[disabled]`);
  check((await control('revoke-viewer')) === 'revoked', 'the harness revoked the viewer token');
  await viewer.goto(`${URL}/ui#/overview`);
  await viewer.waitForSelector('#login-error:not([hidden])');
  check(/no longer works|refused/.test(await viewer.textContent('#login-error')), 'the revoked token is explained');
  await shot(viewer, 'state-token-revoked');
  await viewer.close();
  ok('a viewer token cannot resolve; a revoked token shows the error and asks to sign in');
}

await run('dashboard', tests, close);
