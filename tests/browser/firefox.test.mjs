// The console in Firefox (Debian firefox-esr, driven over WebDriver BiDi) against `roipd demo`:
// it joins, plays the simulated radio's calls, and its PTT keys the radio with Firefox's fake
// microphone audio.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import { DemoBox } from './demo-box.mjs';
import { freePort, launchFirefox, prerequisites, readWav, sleep, tmpDir, until } from './harness.mjs';

let ff, box, page;
const dir = tmpDir('roipd-firefox-');

before(async () => {
  await prerequisites();
  ff = await launchFirefox();
  box = new DemoBox({ dir, port: await freePort() });
  await box.start();
});

after(async () => {
  await box?.stop().catch((e) => console.error('stopping the box:', e));
  await ff?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const ops = () => page.locator('.channel[data-channel="ops"]');
const floorState = () => page.locator('#floor-status').getAttribute('data-state');
const withLog = (fn) => async () => {
  try { await fn(); } catch (err) { err.message += `\n---- roipd log (last lines):\n${box?.log()}`; throw err; }
};

test('firefox: the console joins and plays the simulated radio', withLog(async () => {
  page = await (await ff.newContext()).newPage();
  page.on('pageerror', (err) => console.error(`[page error] ${err.message}`));
  await page.goto(`${box.url}/?token=${box.token}`);
  await until('ICE connected', async () => (await page.locator('#conn').getAttribute('data-state')) === 'up', 20000);
  await until('the radio talking', async () => (await ops().getAttribute('data-holder')) === 'other', 40000);
  const level = await until('audio level', async () => {
    const l = Number(await ops().getAttribute('data-level'));
    return l > 0.05 && l;
  }, 10000);
  await until('50 packets', async () => Number(await ops().getAttribute('data-packets')) >= 50, 5000);
  console.log(`  firefox rx level ${level.toFixed(3)}`);
}));

test('firefox: holding the space bar keys the radio and sends audio', withLog(async () => {
  await until('channel idle', async () => (await ops().getAttribute('data-holder')) === '', 30000);
  const before = fs.existsSync(box.record) ? readWav(box.record).samples.length : 0;
  await page.locator('body').click({ position: { x: 5, y: 5 } });
  await page.keyboard.down('Space');
  await until('TRANSMITTING', async () => (await floorState()) === 'granted', 5000);
  await until('the radio PTT line keyed', () => box.pttLine(), 5000);
  await sleep(2000);
  await page.keyboard.up('Space');
  await until('idle after release', async () => (await floorState()) === 'idle', 3000);
  await sleep(500);
  // Firefox's fake microphone is a tone: the radio's recording gets loud audio while keyed.
  const { rate, samples } = readWav(box.record);
  const sent = samples.subarray(before);
  let loud = 0;
  for (let i = 0; i + 960 <= sent.length; i += 960) {
    let e = 0;
    for (let j = i; j < i + 960; j++) e += sent[j] * sent[j];
    if (Math.sqrt(e / 960) > 0.02) loud += 960 / rate;
  }
  assert.ok(loud >= 1.0, `seconds of audio transmitted from Firefox: ${loud.toFixed(2)}`);
  console.log(`  firefox: ${loud.toFixed(2)} s of audio transmitted`);
}));
