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

test('mock: a desk box\'s console shows its desk and sends every control as a desk command', async () => {
  const chromium = await prerequisites();
  const dir = tmpDir('roipd-mock-desk-');
  const browser = await launch(chromium, toneWav(path.join(dir, 'mic.wav')));
  const box = new MockDemo({ browser, port: await freePort(), lines: path.join(dir, 'lines'),
    schedule: { every: 3600000, talk: 1000 }, desk: true });
  await box.start();
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${box.url}/?token=demo`);
    await until('desk panel', () => page.locator('#desk').isVisible(), 20000);
    assert.equal(await page.locator('#desk-port').textContent(), 'desk');
    const row = (ch) => page.locator(`#desk-channels tr[data-channel="${ch}"]`);
    assert.equal(await row('ops').locator('.desk-select').isChecked(), true);

    await row('fire').locator('.desk-select').check();
    await until('fire selected', async () => box.desk.selected === 'fire');
    await row('ops').locator('.desk-listen').uncheck();
    await until('ops muted', async () => box.desk.channels[0].listen === false);
    await row('fire').locator('.desk-volume').fill('-12');
    await until('fire volume', async () => box.desk.channels[1].volume_db === -12);

    // Desk PTT: held, then let go; the state comes back from the box.
    const ptt = page.locator('#desk-ptt');
    const bb = await ptt.boundingBox();
    await page.mouse.move(bb.x + bb.width / 2, bb.y + bb.height / 2);
    await page.mouse.down();
    await until('desk talking on fire', async () => /desk talking/.test(await row('fire').textContent()));
    await page.mouse.up();
    await until('desk stopped', async () => !/desk talking/.test(await row('fire').textContent()));

    await page.selectOption('#desk-patch-a', 'ops');
    await page.selectOption('#desk-patch-b', 'fire');
    await page.click('#desk-patch button[type=submit]');
    await until('patch listed', () => page.locator('#desk-patches li[data-patch="ops+fire"]').isVisible());
    // The same patch again is refused by the box; the console shows why.
    await page.click('#desk-patch button[type=submit]');
    await until('refusal shown', async () => /already patched/.test(await page.locator('#desk-error').textContent()));
    await page.locator('#desk-patches li[data-patch="ops+fire"] button').click();
    await until('patch gone', async () => (await page.locator('#desk-patches li').count()) === 0);

    assert.deepEqual(box.deskLog(), [
      { action: 'select', channel: 'fire' },
      { action: 'listen', channel: 'ops', on: false },
      { action: 'volume', channel: 'fire', db: -12 },
      { action: 'ptt', on: true },
      { action: 'ptt', on: false },
      { action: 'patch', channels: ['ops', 'fire'], on: true },
      { action: 'patch', channels: ['ops', 'fire'], on: true },
      { action: 'patch', channels: ['ops', 'fire'], on: false },
    ]);
  } finally {
    await box.stop();
    await browser.close();
  }
});
