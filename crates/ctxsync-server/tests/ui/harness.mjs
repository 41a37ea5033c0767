// What every browser script here shares (dashboard.test.mjs, agentsync.test.mjs,
// bench.mjs): the environment, checks and their "ok - NAME" lines, figures, headless
// Chromium on a throw-away profile, sign-in, API calls, screenshots into OUT_DIR, the
// control channel to the Rust harness, and the ending (failure screenshots, exit code).

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

export function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`missing environment variable ${name}`);
  return value;
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}
export const ok = (name) => console.log(`ok - ${name}`);
export const figure = (name, value) => console.log(`FIGURE ${name}: ${value}`);

export const URL = env('CTXSYNC_URL');
export const OUT = env('OUT_DIR');

/** A JSON API call; the body is parsed when there is one. */
export async function call(method, path, token, body) {
  const response = await fetch(`${URL}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Headless Chromium (CHROMIUM) on a fresh profile, removed by `run`. */
export async function launch() {
  mkdirSync(OUT, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'ctxsync-ui-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: env('CHROMIUM'),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
  });
  return { browser, profile };
}

/** The first tab, with page errors printed. */
export async function firstPage(browser) {
  const page = browser.pages()[0] ?? await browser.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  return page;
}

/** A full-page screenshot OUT_DIR/NAME.png; its path is printed as "SCREENSHOT path". */
export async function shot(page, name) {
  const path = join(OUT, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`SCREENSHOT ${path}`);
}

export async function signIn(page, secret) {
  await page.fill('#token-input', secret);
  await page.click('#login-form button[type=submit]');
}

/** Requests to the Rust harness: prints "CTL command", resolves with its answer line. */
export function controller() {
  const lines = createInterface({ input: process.stdin });
  const waiting = [];
  lines.on('line', (line) => waiting.shift()?.(line.trim()));
  const control = (command) => new Promise((resolve) => {
    waiting.push(resolve);
    console.log(`CTL ${command}`);
  });
  return { control, close: () => lines.close() };
}

/** Runs `body(browser)`; on a throw prints "not ok", screenshots every tab as
 * `PREFIX-failure-N.png`; closes everything and exits 0 or 1. */
export async function run(prefix, body, cleanup = () => {}) {
  const { browser, profile } = await launch();
  let failed = false;
  try {
    await body(browser);
  } catch (e) {
    failed = true;
    console.log(`not ok - ${e.stack ?? e}`);
    try {
      for (const [i, p] of browser.pages().entries()) await p.screenshot({ path: join(OUT, `${prefix}-failure-${i}.png`), fullPage: true });
    } catch {
      // The screenshot is a help, not a check.
    }
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
    cleanup();
  }
  console.log(`screenshots in ${OUT}`);
  process.exit(failed ? 1 : 0);
}
