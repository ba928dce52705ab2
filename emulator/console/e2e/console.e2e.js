// Drives the emulator's web console in headless Chromium (Debian's chromium
// package) with playwright-core. Run by emulator/console_browser_test.go,
// which starts the emulator and the simulated devices and passes:
//
//   CONSOLE_URL      https://localhost:PORT/console/
//   CONSOLE_TOKEN    the console token from emulator.json
//   SERVER_SPKI      base64 SHA-256 of the server certificate's public key
//                    (Chromium trusts exactly that key, nothing else)
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
//   USER_DATA_DIR    a fresh, empty profile directory
//   SCREENSHOT       where to save the PNG
//   EXPECT_DEVICES   comma-separated device IDs the registry must list
//   EXPECT_GROUP     an enrollment group ID the groups table must list
//   LIVE_DEVICE      a streaming device whose chart must grow while watched
//   FLUSH_DEVICE     a connected device to flush through the UI
//   ROUTE_DEVICE     the device shown in the screenshot (chart and route)
//
// It prints one JSON object with what it measured, or fails with a message.
'use strict';

const { chromium } = require('playwright-core');

function env(name, def) {
  const v = process.env[name] || def;
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function main() {
  const url = env('CONSOLE_URL');
  const flags = [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-proxy-server', '--disable-dev-shm-usage',
    `--ignore-certificate-errors-spki-list=${env('SERVER_SPKI')}`,
  ];
  const ctx = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: flags,
    viewport: { width: 1600, height: 1000 },
    timezoneId: 'UTC',
    locale: 'en-GB',
    timeout: 60000,
  });
  const out = {};
  const pageErrors = [];
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(30000);
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    // Chromium logs every non-2xx fetch; the 401s of the logged-out page
    // and the wrong token are expected, anything else is a failure.
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().includes('status of 401')) pageErrors.push(m.text());
    });

    // Log in with a wrong token first: the form says why, then the real one.
    await page.goto(url);
    await page.waitForSelector('#login:not([hidden])');
    await page.fill('#credential', 'wrong-token');
    await page.click('#login-form button[type=submit]');
    await page.waitForFunction(() => document.getElementById('login-error').textContent.includes('wrong console token'));
    await page.fill('#credential', env('CONSOLE_TOKEN'));
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#app:not([hidden])');
    await page.waitForSelector('#live.on');
    const cookies = await ctx.cookies();
    const session = cookies.find((c) => c.name.startsWith('__Host-'));
    check(session && session.httpOnly && session.secure && session.sameSite === 'Strict', `session cookie ${JSON.stringify(session)}`);
    check(!(await page.evaluate(() => document.cookie)).includes('__Host-'), 'the session cookie is readable from script');

    // Tables.
    const ids = env('EXPECT_DEVICES').split(',');
    for (const id of ids) await page.waitForSelector(`#devices tbody tr[data-id="${id}"]`);
    out.devices = await page.locator('#devices tbody tr[data-id]').count();
    out.connected = await page.locator('#devices tbody td.conn.on').count();
    await page.waitForSelector(`#groups tbody tr[data-id="${env('EXPECT_GROUP')}"]`);
    out.groups = await page.locator('#groups tbody tr[data-id]').count();
    out.registrations = await page.locator('#registrations tbody tr[data-id]').count();
    out.assigned = await page.locator('#registrations tbody td.status.assigned').count();

    // Live view: a streaming device's chart grows while we watch.
    const live = env('LIVE_DEVICE');
    await page.click(`#devices tbody tr[data-id="${live}"] td.id`);
    await page.waitForSelector('#temp-chart svg path.line');
    const segments = () => page.$eval('#temp-chart svg path.line', (p) => (p.getAttribute('d').match(/[ML]/g) || []).length);
    const before = await segments();
    await page.waitForFunction((n) => {
      const p = document.querySelector('#temp-chart svg path.line');
      return p && (p.getAttribute('d').match(/[ML]/g) || []).length > n;
    }, before);
    out.livePointsBefore = before;
    out.livePointsAfter = await segments();

    // Confirmation: cancelling does nothing.
    const flushId = env('FLUSH_DEVICE');
    const row = `#devices tbody tr[data-id="${flushId}"]`;
    await page.click(`${row} button[data-action=disenroll]`);
    await page.waitForSelector('#confirm[open]');
    out.confirmTitle = await page.textContent('#confirm-title');
    await page.click('#confirm button[value=cancel]');
    await page.waitForSelector('#confirm', { state: 'hidden' });
    check(await page.locator('#results li').count() === 0, 'a cancelled action ran');

    // Flush, confirmed.
    await page.click(`${row} button[data-action=flush]`);
    await page.waitForSelector('#confirm[open]');
    await page.click('#confirm-ok');
    const done = await page.waitForSelector(`#results li[data-action=flush][data-id="${flushId}"]`, { timeout: 60000 });
    out.flushOk = await done.evaluate((li) => li.classList.contains('ok'));
    out.flushResult = await done.evaluate((li) => li.textContent);
    check(out.flushOk, `flush failed: ${out.flushResult}`);

    // The recorded shipment: charts with the band and excursions, and the route.
    const routeId = env('ROUTE_DEVICE');
    await page.click(`#devices tbody tr[data-id="${routeId}"] td.id`);
    await page.waitForFunction((id) => document.getElementById('detail-title').textContent.startsWith(id), routeId);
    await page.waitForSelector('#temp-chart svg rect.band');
    out.tempPoints = await page.$eval('#temp-chart svg path.line', (p) => (p.getAttribute('d').match(/[ML]/g) || []).length);
    out.excursionDots = await page.locator('#temp-chart svg circle.excursion').count();
    out.excursionSpans = await page.locator('#temp-chart svg rect.excursion-span').count();
    out.bandLimits = await page.locator('#temp-chart svg text.limit-label').allTextContents();
    out.pressurePoints = await page.$eval('#pressure-chart svg path.line', (p) => (p.getAttribute('d').match(/[ML]/g) || []).length);
    out.routePoints = await page.$eval('#route svg path.route', (p) => (p.getAttribute('d').match(/[ML]/g) || []).length);
    out.routeStart = await page.locator('#route svg g.marker-start').count();
    out.routeEnd = await page.locator('#route svg g.marker-end').count();
    out.scaleLabel = await page.textContent('#route svg g.scale-bar text');
    out.summary = await page.textContent('#detail-summary');
    check(out.tempPoints > 10 && out.excursionDots > 0 && out.routePoints > 10, `charts incomplete: ${JSON.stringify(out)}`);
    check(/^\d+(\.\d+)? k?m$/.test(out.scaleLabel), `scale bar label ${out.scaleLabel}`);

    // A band set in the console moves the band and the excursions.
    await page.fill('#band-min', '-5');
    await page.fill('#band-max', '30');
    await page.click('#band-form button[type=submit]');
    await page.waitForFunction(() => document.querySelectorAll('#temp-chart svg circle.excursion').length === 0);
    await page.click('#band-reset');
    await page.waitForFunction(() => document.querySelectorAll('#temp-chart svg circle.excursion').length > 0);

    await page.mouse.move(0, 0);
    await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });
    out.pageErrors = pageErrors;
    check(pageErrors.length === 0, `page errors: ${pageErrors.join('; ')}`);
  } finally {
    await ctx.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`console e2e: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
