// The console over HTTPS: `roipd demo --tls` (a self-signed certificate made in its folder),
// Chromium trusting exactly that certificate's key (--ignore-certificate-errors-spki-list, the
// way a pinned certificate is trusted), the token in the URL's fragment. Secure context, the
// response headers, no CSP violation, PTT held with the fake microphone keys the simulated
// radio and sends its tone, release unkeys it. Also the connect time over HTTPS vs plain HTTP.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { DemoBox } from './demo-box.mjs';
import { freePort, launch, prerequisites, sleep, tmpDir, toneWav, until } from './harness.mjs';

let chromium, browser, plainBrowser, box, plain, page;
const dir = tmpDir('roipd-tls-');
const cspViolations = [];

const connState = (p) => p.locator('#conn').getAttribute('data-state');
const floorState = (p) => p.locator('#floor-status').getAttribute('data-state');

/** Open the console with the token in the fragment; ms until joined with ICE up. */
async function open(b, url, token) {
  const ctx = await b.newContext({ viewport: { width: 420, height: 860 } });
  const p = await ctx.newPage();
  p.on('pageerror', (err) => console.error(`[page error] ${err.message}`));
  p.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
  const t0 = Date.now();
  const response = await p.goto(`${url}/#token=${encodeURIComponent(token)}`);
  await until('the console to join and ICE to connect', async () => (await connState(p)) === 'up', 20000);
  return { p, ms: Date.now() - t0, response };
}

before(async () => {
  chromium = await prerequisites();
  const wav = toneWav(path.join(dir, 'mic-1khz.wav'), { freq: 1000, seconds: 4 });
  for (const d of ['tls', 'plain']) fs.mkdirSync(path.join(dir, d));
  box = new DemoBox({ dir: path.join(dir, 'tls'), port: await freePort(), tls: true, trafficEvery: 0 });
  await box.start();
  browser = await launch(chromium, wav, [`--ignore-certificate-errors-spki-list=${box.spkiHash()}`]);
  plain = new DemoBox({ dir: path.join(dir, 'plain'), port: await freePort(), trafficEvery: 0 });
  await plain.start();
  plainBrowser = await launch(chromium, wav);
});

after(async () => {
  await box?.stop().catch((e) => console.error('stopping the TLS box:', e));
  await plain?.stop().catch((e) => console.error('stopping the plain box:', e));
  await browser?.close();
  await plainBrowser?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('tls: the console loads over HTTPS with its headers, in a secure context, token out of the URL', async () => {
  const opened = await open(browser, box.url, box.token);
  page = opened.p;
  const h = opened.response.headers();
  assert.equal(new URL(page.url()).protocol, 'https:');
  assert.equal(h['strict-transport-security'], 'max-age=31536000');
  assert.match(h['content-security-policy'], /default-src 'none'; script-src 'self'/);
  assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(await page.evaluate(() => window.isSecureContext), true, 'a secure context (microphone allowed off localhost)');
  assert.equal(await page.evaluate(() => location.hash), '', 'the token left the address bar');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('roipd.token')), box.token);
  const plainOpened = await open(plainBrowser, plain.url, plain.token);
  console.log(`  console joined with ICE up: HTTPS ${opened.ms} ms, plain HTTP ${plainOpened.ms} ms`);
  await plainOpened.p.context().close();
});

test('tls: holding PTT keys the radio and sends the tone over HTTPS/WSS; release unkeys it', async () => {
  const b = await page.locator('#ptt').boundingBox();
  const toneBefore = await box.txTone();
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  await page.mouse.down();
  try {
    await until('TRANSMITTING', async () => (await floorState(page)) === 'granted', 5000);
    await until('the radio PTT line keyed', () => box.pttLine(), 5000);
    await sleep(2000);
    assert.equal(box.pttLine(), true, 'PTT line held while the button is held');
  } finally {
    await page.mouse.up();
  }
  await until('idle after release', async () => (await floorState(page)) === 'idle', 3000);
  await until('the radio PTT line released', async () => !box.pttLine(), 10000);
  const tone = await until('the 1 kHz tone at the radio output', async () => {
    const t = (await box.txTone()) - toneBefore;
    return t >= 1.0 && t;
  }, 5000);
  console.log(`  ${tone.toFixed(2)} s of 1 kHz tone transmitted over HTTPS/WSS`);
  assert.deepEqual(cspViolations, [], 'the console runs under its CSP');
});

test('tls: the browser is refused a certificate it was not told to trust', async () => {
  const other = await launch(chromium, path.join(dir, 'mic-1khz.wav'));
  try {
    const p = await other.newPage();
    await assert.rejects(p.goto(`${box.url}/`), /ERR_CERT/);
  } finally {
    await other.close();
  }
});
