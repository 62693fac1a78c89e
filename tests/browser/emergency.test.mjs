// Emergency alerts end to end (issue 18, item 3): `roipd demo --mqtt` with a real Mosquitto; the
// simulated radio's emergency GPIO line (a file in its lines folder) raises an emergency on
// "ops"; MQTT carries the `emergency` event and the retained `roipd/demo/emergency/ops`; a
// headless Chromium console shows the banner (and sounds the alert tone) within 500 ms, the
// operator acknowledges it there, and MQTT then shows it cleared. A WebSocket that never said
// hello (or said it with a wrong token) cannot raise one.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';
import { DemoBox } from './demo-box.mjs';
import { REPO, freePort, launch, prerequisites, sleep, tmpDir, toneWav, until } from './harness.mjs';

const dir = tmpDir('roipd-emergency-');
let chromium, browser, box, broker, brokerPort, sub, page;
/** Every MQTT message seen since start: { topic, payload, at }. */
const seen = [];

function which(cmd, pkg) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, `this test needs ${cmd}: install Debian package ${pkg}`);
  return r.stdout.trim();
}

async function startBroker() {
  const mosquitto = which('mosquitto', 'mosquitto');
  which('mosquitto_sub', 'mosquitto-clients');
  brokerPort = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  // Running as root, Mosquitto would drop to user `mosquitto`; nothing here needs that.
  fs.writeFileSync(conf, `per_listener_settings true\npersistence false\nuser root\nset_tcp_nodelay true\n` +
    `listener ${brokerPort} 127.0.0.1\nallow_anonymous true\n`);
  broker = spawn(mosquitto, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  broker.stderr.on('data', (d) => { err += d; });
  await until('mosquitto to listen', () => {
    if (broker.exitCode !== null) throw new Error(`mosquitto exited: ${err}`);
    return spawnSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(brokerPort), '-t', 'probe', '-n']).status === 0;
  }, 10000);
}

function subscribe() {
  sub = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(brokerPort), '-v', '-t', 'roipd/demo/#'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  sub.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const sp = line.indexOf(' ');
      seen.push({ topic: line.slice(0, sp), payload: line.slice(sp + 1), at: Date.now() });
    }
  });
}

const json = (m) => { try { return JSON.parse(m.payload); } catch { return null; } };
const events = (kind) => seen.filter((m) => m.topic === 'roipd/demo/event').map(json).filter((e) => e?.kind === kind);

/** The retained emergency state of "ops", as a new subscriber gets it from the broker. */
function retained() {
  const r = spawnSync('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(brokerPort), '-t', 'roipd/demo/emergency/ops',
    '-C', '1', '-W', '3', '--retained-only'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? JSON.parse(r.stdout.trim()) : null;
}

const bannerShown = (p) => p.evaluate(() => !document.querySelector('#emergency-banner').hidden);

before(async () => {
  chromium = await prerequisites();
  await startBroker();
  subscribe();
  box = new DemoBox({ dir, port: await freePort(), trafficEvery: 0, mqtt: `mqtt://127.0.0.1:${brokerPort}` });
  await box.start();
  await until('the box online on MQTT', () => seen.some((m) => m.topic === 'roipd/demo/status' && json(m)?.online), 15000);
  browser = await launch(chromium, toneWav(path.join(dir, 'mic.wav'), { freq: 1000, seconds: 4 }));
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  page = await ctx.newPage();
  page.on('pageerror', (err) => console.error(`[page error] ${err.message}`));
  await page.goto(`${box.url}/#token=${box.token}`);
  await until('the console to join and ICE to connect',
    async () => (await page.locator('#conn').getAttribute('data-state')) === 'up', 20000);
});

after(async () => {
  await box?.stop().catch((e) => console.error('stopping the box:', e));
  await browser?.close();
  sub?.kill();
  if (broker && broker.exitCode === null) {
    broker.kill('SIGTERM');
    await new Promise((r) => broker.once('exit', r));
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('emergency: a WebSocket without a valid hello raises nothing', async () => {
  const url = `${box.url.replace(/^http/, 'ws')}/ws`;
  const tries = [
    [{ type: 'emergency', channel: 'ops', action: 'raise' }],
    [{ type: 'hello', token: 'not-the-token', name: 'intruder', members: [] },
      { type: 'emergency', channel: 'ops', action: 'raise' }],
  ];
  for (const msgs of tries) {
    const ws = new WebSocket(url);
    const got = [];
    ws.on('message', (d) => got.push(JSON.parse(String(d))));
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    for (const m of msgs) ws.send(JSON.stringify(m));
    const code = await new Promise((resolve) => ws.once('close', (c) => resolve(c)));
    assert.ok([4000, 4001].includes(code), `closed with ${code}: ${JSON.stringify(got)}`);
    assert.equal(got[0]?.type, 'error');
  }
  await sleep(500);
  assert.equal(events('emergency').length, 0, 'no emergency event');
  assert.equal(retained(), null, 'no retained emergency state');
  assert.equal(await bannerShown(page), false, 'no banner');
});

test('emergency: the radio\'s emergency line raises it; MQTT and the console banner within 500 ms; ack clears it', async () => {
  assert.equal(await bannerShown(page), false);
  const t0 = Date.now();
  box.emergencyLine(true);
  await page.waitForFunction(() => !document.querySelector('#emergency-banner').hidden, null,
    { polling: 'raf', timeout: 5000 });
  const hostMs = Date.now() - t0;
  // When the page put the banner up, on the same (system) clock as t0.
  const shownAt = await page.evaluate(() => performance.timeOrigin + S.emergencies.get('ops').shownAt);
  const pageMs = Math.round(shownAt - t0);
  console.log(`  emergency line -> console banner: ${pageMs} ms (page clock), ${hostMs} ms (seen by the test)`);
  assert.ok(pageMs < 500, `banner after ${pageMs} ms`);
  const text = await page.locator('#emergency-list li').first().textContent();
  assert.match(text, /Emergency on Operations: raised by radio1 \(radio\)/);
  assert.equal(await page.evaluate(() => S.alert !== null && S.alert.ctx.state), 'running', 'the alert tone sounds');

  const event = await until('the emergency event on MQTT', () => events('emergency')[0], 5000);
  assert.equal(event.channel, 'ops');
  assert.equal(event.port, 'radio1');
  assert.equal(event.reason, 'radio');
  const mqttMs = seen.find((m) => m.topic === 'roipd/demo/event' && json(m)?.kind === 'emergency').at - t0;
  console.log(`  emergency line -> MQTT event at the subscriber: ${mqttMs} ms`);
  const state = retained();
  assert.equal(state?.active, true, `retained state ${JSON.stringify(state)}`);
  assert.equal(state.source, 'radio1');
  assert.equal(state.source_kind, 'radio');
  assert.ok(state.since);

  // Like demo.test.mjs: a scratch folder unless ROIPD_SCREENSHOTS=docs/screenshots (none: none).
  if (process.env.ROIPD_SCREENSHOTS !== 'none') {
    const shots = path.resolve(REPO, process.env.ROIPD_SCREENSHOTS ?? 'target/screenshots');
    fs.mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, 'console-emergency.png'), fullPage: false });
  }

  // Still on after a reload: a console that joins late is told.
  box.emergencyLine(false);
  await page.reload();
  await until('the banner again after a reload', () => bannerShown(page), 10000);

  const a0 = Date.now();
  await page.locator('#emergency-list button.emergency-ack').first().click();
  await until('the banner gone', async () => !(await bannerShown(page)), 2000, 20);
  console.log(`  acknowledge click -> banner gone: ${Date.now() - a0} ms`);
  assert.equal(await page.evaluate(() => S.alert), null, 'the alert tone stopped');
  const cleared = await until('the emergency_cleared event', () => events('emergency_cleared')[0], 5000);
  assert.equal(cleared.channel, 'ops');
  assert.match(cleared.detail, /acknowledged by console/);
  const after = retained();
  assert.equal(after?.active, false, `retained state ${JSON.stringify(after)}`);
  assert.match(after.acked_by, /^console/);
});

test('emergency: the console\'s Emergency button raises one with the console as caller; ack clears it', async () => {
  const before = events('emergency').length;
  await page.locator('#emergency').click();
  await until('the banner', () => bannerShown(page), 2000, 20);
  const text = await page.locator('#emergency-list li').first().textContent();
  assert.match(text, /raised by console@console-[0-9a-f]+ \(console\)/);
  const event = await until('a second emergency event', () => events('emergency')[before], 5000);
  assert.equal(event.reason, 'console');
  assert.equal(retained()?.source_kind, 'console');
  await page.locator('#emergency-list button.emergency-ack').first().click();
  await until('the banner gone', async () => !(await bannerShown(page)), 2000, 20);
  await until('cleared on MQTT', () => retained()?.active === false, 5000);
});
