// The console's History panel against `roipd demo` (which records its channel) in Chromium:
// transmissions by the demo's radio and by the console itself are listed, filtered, played in
// the browser (fetched with the Authorization header, played from a Blob URL: the token never
// goes in a URL) and downloaded as the file on disk. A screenshot goes to target/screenshots/
// (ROIPD_SCREENSHOTS=docs/screenshots refreshes the README's).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { DemoBox } from './demo-box.mjs';
import { freePort, launch, prerequisites, REPO, sleep, tmpDir, toneWav, until } from './harness.mjs';

const shots = process.env.ROIPD_SCREENSHOTS === 'none' ? null
  : path.resolve(REPO, process.env.ROIPD_SCREENSHOTS ?? 'target/screenshots');
const dir = tmpDir('roipd-history-');
let browser, box, page;

before(async () => {
  const chromium = await prerequisites();
  browser = await launch(chromium, toneWav(path.join(dir, 'mic-1khz.wav'), { freq: 1000, seconds: 4 }));
  // The demo's radio receives a 4 s call every 8 s.
  box = new DemoBox({ dir, port: await freePort(), trafficEvery: 8 });
  await box.start();
});

after(async () => {
  await box?.stop().catch((e) => console.error('stopping the box:', e));
  await browser?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const rows = () => page.locator('#history-list tbody tr[data-id]');
const onDisk = () => fs.readdirSync(path.join(dir, 'recordings')).filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(fs.readFileSync(path.join(dir, 'recordings', f), 'utf8')));

test('History lists the transmissions, filters, plays one in the browser and downloads it', async () => {
  const ctx = await browser.newContext({ viewport: { width: 900, height: 1100 }, acceptDownloads: true });
  page = await ctx.newPage();
  page.on('pageerror', (err) => console.error(`[page error] ${err.message}`));
  await page.goto(`${box.url}/#token=${encodeURIComponent(box.token)}`);
  await until('the console connected', async () => (await page.locator('#conn').getAttribute('data-state')) === 'up', 20000);
  assert.equal(await page.locator('#history').isHidden(), false, 'the box records: History shown');

  // A transmission of the console's own: wait for the channel to be idle, hold PTT 1.5 s.
  const ops = page.locator('.channel[data-channel="ops"]');
  await until('channel ops idle', async () => (await ops.getAttribute('data-holder')) === '', 20000);
  const b = await page.locator('#ptt').boundingBox();
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  await page.mouse.down();
  await until('TRANSMITTING', async () => (await page.locator('#floor-status').getAttribute('data-state')) === 'granted', 5000);
  await sleep(1500);
  await page.mouse.up();
  const me = await page.evaluate(() => sessionStorage.getItem('roipd.name'));

  // The radio's call and the console's over, listed without a reload (refreshed when a floor
  // goes idle), newest first, as on disk.
  await until('the radio and the console in History', async () => {
    const talkers = await rows().locator('td:nth-child(3)').allTextContents();
    return talkers.some((t) => t === 'radio1') && talkers.some((t) => t.includes(me));
  }, 40000);
  const listed = await rows().evaluateAll((trs) => trs.map((tr) => tr.dataset.id));
  const disk = onDisk().sort((x, y) => y.id.localeCompare(x.id));
  assert.deepEqual(listed, disk.map((m) => m.id).slice(0, listed.length), 'the page lists what is on disk, newest first');
  await until('the status line counts them', async () => /\d+ transmissions?/.test(await page.locator('#history-status').textContent()), 3000);

  // Filters: talker, and a time range.
  await page.locator('#hist-talker').fill('radio1');
  await page.locator('#history-filter button[type=submit]').click();
  await until('only radio1', async () => {
    const talkers = await rows().locator('td:nth-child(3)').allTextContents();
    return talkers.length > 0 && talkers.every((t) => t === 'radio1');
  }, 5000);
  await page.locator('#hist-from').fill('2099-01-01T00:00');
  await page.locator('#history-filter button[type=submit]').click();
  await until('nothing after 2099', async () => (await rows().count()) === 0
    && /no transmissions/.test(await page.locator('#history-status').textContent()), 5000);
  await page.locator('#hist-from').fill('');
  await page.locator('#hist-talker').fill('');
  await page.locator('#history-filter button[type=submit]').click();
  await until('all again', async () => (await rows().count()) >= 2, 5000);

  // Play the console's own over: the audio element plays it to the end, its length as recorded.
  const mine = disk.find((m) => m.talker.includes(me));
  const row = page.locator(`#history-list tbody tr[data-id="${mine.id}"]`);
  await page.evaluate(() => {
    const a = document.querySelector('#history-audio');
    window.played = { ended: false, maxTime: 0 };
    a.addEventListener('timeupdate', () => { window.played.maxTime = Math.max(window.played.maxTime, a.currentTime); });
    a.addEventListener('ended', () => { window.played.ended = true; });
  });
  await row.locator('.hist-play').click();
  await until('the recording played to its end', () => page.evaluate(() => window.played.ended), 10000);
  const played = await page.evaluate(() => ({ ...window.played, duration: document.querySelector('#history-audio').duration,
    src: document.querySelector('#history-audio').src }));
  assert.match(played.src, /^blob:/, 'played from a Blob URL, no token in a URL');
  assert.ok(played.maxTime > 1.0, `currentTime advanced to ${played.maxTime}`);
  assert.ok(Math.abs(played.duration * 1000 - mine.duration_ms) <= 40,
    `decoded length ${played.duration} s vs ${mine.duration_ms} ms recorded`);
  console.log(`  played ${mine.id}: ${played.duration.toFixed(3)} s (recorded ${mine.duration_ms} ms)`);

  // Download: the file as it is on disk.
  const [download] = await Promise.all([page.waitForEvent('download'), row.locator('.hist-download').click()]);
  assert.equal(download.suggestedFilename(), mine.file);
  const saved = path.join(dir, 'downloaded.opus');
  await download.saveAs(saved);
  assert.deepEqual(fs.readFileSync(saved), fs.readFileSync(path.join(dir, 'recordings', mine.file)));

  // The API takes the token from the header only, also from the page.
  const inUrl = await page.evaluate(async (t) => (await fetch(`/api/recordings?token=${t}`)).status, box.token);
  assert.equal(inUrl, 400);

  await row.locator('.hist-play').click();
  await sleep(300);
  if (shots) {
    fs.mkdirSync(shots, { recursive: true });
    await page.locator('#history').screenshot({ path: path.join(shots, 'console-history.png') });
  }
  await ctx.close();
});
