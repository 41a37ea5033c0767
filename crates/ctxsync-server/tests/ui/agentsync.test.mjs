// End-to-end test of the dashboard's Agent sync page in headless Chromium, against a real
// `ctxsync serve --watch-agents` over a temporary copy of the OpenAgentBuilder fixture,
// started by crates/ctxsync/tests/ui_browser.rs, which passes:
//   CTXSYNC_URL, TOKEN, ROOT (the watched repository), CHROMIUM, OUT_DIR.
// The script edits the library itself (a module file, then a hand edit of an output):
// the page must show the new generation, then the hand-edit conflict, without a reload.
// Every check prints "ok - NAME" or throws (non-zero exit).

import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { URL, check, env, firstPage, ok, run, shot, signIn } from './harness.mjs';

const TOKEN = env('TOKEN');
const ROOT = env('ROOT');

async function feed() {
  const response = await fetch(`${URL}/v1/agent-sync`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  check(response.status === 200, `GET /v1/agent-sync answered ${response.status}`);
  return response.json();
}

// An agent's own source file: the fixture links its modules (ref mode link), so a
// module's text does not change any output, only an agent file's does.
const MODULE = 'agents/development/backend-engineer.md';

async function tests(browser) {
  const page = await firstPage(browser);
  await page.goto(`${URL}/ui#/agentsync`);
  await signIn(page, TOKEN);

  // 1. The initial run's generation, what it rendered, and the reference check.
  await page.waitForSelector('#generations tr[data-generation]', { timeout: 30000 });
  const first = await feed();
  check(first.enabled === true, 'the watcher is on');
  const gen1 = first.runs.find((r) => r.report?.generation != null);
  check(gen1, `the initial run wrote a generation: ${JSON.stringify(first.runs.map((r) => r.report?.generation))}`);
  await page.waitForSelector('#refs-summary', { timeout: 30000 });
  const refs = await page.textContent('#refs-summary');
  const broken = first.check.report.broken_files.length;
  check(broken > 0 && refs.includes(`${broken} broken files`), `the fixture's broken references are shown: ${refs}`);
  check((await page.textContent('#agentsync-last')).includes(gen1.report.rendered[0]), 'the last run lists what it rendered');
  ok('agent sync: the initial generation, what it rendered and the reference check are shown');

  // 2. A module edited: the page shows the new generation without a reload.
  await page.evaluate(() => { window.notReloaded = true; });
  const before = Math.max(...first.runs.map((r) => r.report?.generation ?? 0));
  appendFileSync(join(ROOT, MODULE), '\n\nA line added by the dashboard test.\n');
  const next = before + 1;
  await page.waitForSelector(`#generations tr[data-generation="${next}"]`, { timeout: 30000 });
  check(await page.evaluate(() => window.notReloaded === true), 'the page was not reloaded');
  const row = await page.textContent(`#generations tr[data-generation="${next}"]`);
  check(row.includes(MODULE), `the generation's trigger is the module: ${row}`);
  const second = await feed();
  const run2 = second.runs.find((r) => r.report?.generation === next);
  check(run2.report.updated.length > 0 && run2.report.written.length > 0, 'the module edit updated agents');
  check(row.includes(run2.report.updated[0]), `the row lists the updated agents: ${row}`);
  await shot(page, 'page-6-agent-sync');
  ok('agent sync: an agent file edit shows up as a new generation, live');

  // 3. An output edited by hand, then the module again: the run leaves the output alone
  // and the page shows the conflict.
  const output = run2.report.written.find((p) => p.endsWith('.md')) ?? run2.report.written[0];
  appendFileSync(join(ROOT, output), '\nA note written by hand.\n');
  appendFileSync(join(ROOT, MODULE), '\nA second line added by the dashboard test.\n');
  await page.waitForFunction((path) => [...document.querySelectorAll('#agentsync-conflict-list li')]
    .some((li) => li.textContent.includes(path)), output, { timeout: 30000 });
  const conflict = await page.textContent('#agentsync-conflict-list');
  check(conflict.includes('left alone'), `the conflict says the output was left alone: ${conflict}`);
  check(readFileSync(join(ROOT, output), 'utf8').includes('A note written by hand.'), 'the hand edit is kept');
  await shot(page, 'state-agent-sync-conflict');
  ok('agent sync: a hand-edit conflict shows up');
}

await run('agentsync', tests);
