// The dashboard's benchmark in headless Chromium, driven by `ctxsync-bench-ui`
// (crates/ctxsync-bench/src/bin/ctxsync-bench-ui.rs), which starts `ctxsync serve`, passes
//   CTXSYNC_URL, CONTEXT, ADMIN_TOKEN, CHROMIUM, OUT_DIR, LOADS (page loads to time)
// and runs the push load itself, out of this process: on "CTL load" it pushes at the
// asked rate from its own threads and answers "pushed N SECONDS FAILED".
//
// Figures (lines "FIGURE name: value"):
// * page load to first live data: a fresh navigation to the context page until its
//   event stream is live with the newest revisions shown (median and worst of LOADS);
// * under the load: frames the page rendered per second (a requestAnimationFrame
//   counter), revision events received vs revisions made, gaps, and how long after the
//   load the feed showed the head;
// * bytes a reload moves with a warm cache (Resource Timing; the embedded assets'
//   total size is printed by the Rust side).

import { URL, call, check, controller, env, figure, firstPage, run, shot, signIn } from './harness.mjs';

const CONTEXT = env('CONTEXT');
const ADMIN = env('ADMIN_TOKEN');
const LOADS = Number(process.env.LOADS ?? 10);
const { control, close } = controller();

const head = async () => (await call('GET', `/v1/contexts/${CONTEXT}/head`, ADMIN)).body.revision;

async function bench(browser) {
  const page = await firstPage(browser);
  await page.goto(`${URL}/ui`);
  await signIn(page, ADMIN);
  await page.waitForSelector('#contexts-table');

  // Page load to first live data.
  const loads = [];
  let bytes = null;
  for (let i = 0; i < LOADS; i += 1) {
    await page.goto('about:blank');
    await page.goto(`${URL}/ui#/context/${CONTEXT}`);
    await page.waitForSelector('#stream-state[data-state="live"]');
    await page.waitForSelector('#feed li');
    const timing = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const resources = performance.getEntriesByType('resource');
      const sum = (key) => resources.reduce((n, r) => n + (r[key] ?? 0), nav[key] ?? 0);
      return {
        live: Math.max(window.ctxsyncFeed.firstLiveAt, nav.domContentLoadedEventEnd),
        transfer: sum('transferSize'),
        decoded: sum('decodedBodySize'),
      };
    });
    loads.push(timing.live);
    if (i === 0) bytes = timing;
  }
  loads.sort((a, b) => a - b);
  figure(`page load to first live data, median of ${LOADS} (ms)`, loads[Math.floor(LOADS / 2)].toFixed(0));
  figure(`page load to first live data, worst of ${LOADS} (ms)`, loads.at(-1).toFixed(0));
  figure('bytes over the wire per reload of the context page, warm cache: 304s for the assets (transfer / decoded)', `${bytes.transfer} / ${bytes.decoded}`);

  // The feed under load: the page stays on the context page while the harness pushes.
  await page.evaluate(() => {
    window.frameCount = 0;
    const tick = () => { window.frameCount += 1; requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
  });
  const start = await head();
  const received0 = await page.evaluate(() => window.ctxsyncFeed.received);
  const frames0 = await page.evaluate(() => window.frameCount);
  const answer = await control('load');
  const frames1 = await page.evaluate(() => window.frameCount);
  const [, pushed, seconds, failed] = answer.split(' ');
  const end = await head();
  const t0 = Date.now();
  await page.waitForFunction((r) => window.ctxsyncFeed.lastRevision >= r, end, { timeout: 120000 });
  const caughtUp = (Date.now() - t0) / 1000;
  const stats = await page.evaluate(() => window.ctxsyncFeed);
  const made = end - start;
  figure('revisions made / pushes acknowledged / failed', `${made} / ${pushed} / ${failed}`);
  figure('push load achieved (rev/s)', (made / Number(seconds)).toFixed(0));
  figure('feed: revision events received during the run / gaps', `${stats.received - received0} / ${stats.gaps}`);
  figure('frames rendered per second while under load', ((frames1 - frames0) / Number(seconds)).toFixed(1));
  figure('feed showed the head after the load ended (s)', caughtUp.toFixed(2));
  check(stats.received - received0 === made, `every revision arrived (${stats.received - received0} of ${made})`);
  check(stats.gaps === 0, 'no gap in the feed');
  await shot(page, 'bench-context-after-load');
}

await run('bench', bench, close);
