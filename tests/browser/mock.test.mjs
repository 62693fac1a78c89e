// The console against the protocol mock (mock-hub.mjs): fast, no daemon build needed, and the
// states the demo cannot easily show (preemption, TOT lockout, a refused token).
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, launch, prerequisites, tmpDir, toneWav, until } from './harness.mjs';
import { MockBox } from './mock-hub.mjs';
import { consoleSuite } from './suite.mjs';

class MockDemo extends MockBox {
  async start() {
    await super.start();
    clearInterval(this.meter);
    this.toneSecs = this.toneSecs || 0;
    // The mock's "radio output" is the level of console audio arriving at the hub.
    this.meter = setInterval(async () => {
      if (this.pttLine() && (await this.txLevel().catch(() => 0)) > 0.05) this.toneSecs += 0.1;
    }, 100);
  }
  async stop() { clearInterval(this.meter); await super.stop(); }
  async txTone() { return this.toneSecs; }
}

consoleSuite('mock', async ({ browser, dir }) =>
  new MockDemo({ browser, port: await freePort(), lines: path.join(dir, 'lines') }),
{ screenshots: process.env.ROIPD_MOCK_SCREENSHOTS || null });

test('mock: a refused token shows the login form; revoke and port states are shown', async () => {
  const chromium = await prerequisites();
  const dir = tmpDir('roipd-mock-');
  const browser = await launch(chromium, toneWav(path.join(dir, 'mic.wav')));
  const box = new MockDemo({ browser, port: await freePort(), lines: path.join(dir, 'lines'),
    schedule: { every: 3600000, talk: 1000 } });
  await box.start();
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${box.url}/?token=wrong`);
    await until('login form', () => page.locator('#login').isVisible());
    assert.match(await page.locator('#login-error').textContent(), /refused/);
    await page.fill('#token', 'demo');
    await page.click('#login button[type=submit]');
    await until('connected', async () => (await page.locator('#conn').getAttribute('data-state')) === 'up', 20000);

    // A dispatcher at priority 200 preempts this console: REVOKED (preempted).
    const disp = await (await browser.newContext()).newPage();
    await disp.goto(`${box.url}/?token=demo&priority=200`);
    await until('dispatcher connected', async () => (await disp.locator('#conn').getAttribute('data-state')) === 'up', 20000);
    await page.locator('#ptt').focus();
    await page.keyboard.down('Space');
    await until('granted', async () => (await page.locator('#floor-status').getAttribute('data-state')) === 'granted');
    await disp.locator('body').click({ position: { x: 5, y: 5 } });
    await disp.keyboard.down('Space');
    await until('revoked', async () => (await page.locator('#floor-status').getAttribute('data-state')) === 'revoked');
    assert.match(await page.locator('#floor-status').textContent(), /REVOKED \(preempted by console@console-/);
    // The revoked console no longer sends: its sender has no track.
    assert.equal(await page.evaluate(() => S.pc.getTransceivers().every((t) => !t.sender.track)), true);
    await disp.keyboard.up('Space');
    await page.keyboard.up('Space');

    box.setPort({ locked_out: true, inhibited: true });
    await until('port flags', async () => /locked out \(TOT\), inhibited/.test(await page.locator('#ports tbody').textContent()));
    // Two channels from welcome: the second one can be chosen for TX.
    await page.locator('.channel[data-channel="fire"] .tx-select input').check();
    assert.match(await page.locator('#ptt').textContent(), /Fire/);
  } finally {
    await box.stop();
    await browser.close();
  }
});
