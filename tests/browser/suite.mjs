// The console's behaviour, as a person at a desk sees it, against a box (`roipd demo` or the mock).
// A box provides: url, token, start(), stop(), pttLine() -> bool, txTone() -> seconds of the
// microphone's 1 kHz tone that reached the radio's output so far.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, after, test as nodeTest } from 'node:test';
import { launch, prerequisites, sleep, tmpDir, toneWav, until } from './harness.mjs';

// `receivingRadio`: the box's radio1 receives calls on its own (roipd demo), so a console can
// press PTT while it receives.
export function consoleSuite(name, makeBox, { screenshots = null, receivingRadio = false } = {}) {
  let chromium, browserA, browserB, box, page, pageB;
  const dir = tmpDir('roipd-console-');

  const shot = async (p, file) => {
    if (!screenshots) return;
    fs.mkdirSync(screenshots, { recursive: true });
    await p.screenshot({ path: path.join(screenshots, file), fullPage: true });
  };
  const ops = (p) => p.locator('.channel[data-channel="ops"]');
  const floorState = (p) => p.locator('#floor-status').getAttribute('data-state');
  const connState = (p) => p.locator('#conn').getAttribute('data-state');
  const openConsole = async (browser) => {
    const ctx = await browser.newContext({ viewport: { width: 420, height: 860 } });
    const p = await ctx.newPage();
    p.on('pageerror', (err) => console.error(`[page error] ${err.message}`));
    await p.goto(`${box.url}/?token=${encodeURIComponent(box.token)}`);
    await until('the console to join and ICE to connect', async () => (await connState(p)) === 'up', 20000);
    return p;
  };
  const waitIdle = (p, ms = 30000) => until('channel ops idle', async () =>
    (await ops(p).getAttribute('data-holder')) === '', ms);
  const pressPtt = async (p) => {
    const b = await p.locator('#ptt').boundingBox();
    await p.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
    await p.mouse.down();
  };

  // A failing step also shows the box's log (the daemon's stderr), when it has one.
  const test = (title, fn) => nodeTest(title, async (t) => {
    try { await fn(t); } catch (err) {
      if (box?.log) err.message += `\n---- ${name} log (last lines):\n${box.log()}`;
      throw err;
    }
  });

  before(async () => {
    chromium = await prerequisites();
    const wav = toneWav(path.join(dir, 'mic-1khz.wav'), { freq: 1000, seconds: 4 });
    browserA = await launch(chromium, wav);
    browserB = await launch(chromium, wav);
    box = await makeBox({ browser: browserA, dir });
    await box.start();
  });

  after(async () => {
    await box?.stop().catch((e) => console.error('stopping the box:', e));
    await browserA?.close();
    await browserB?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test(`${name}: the page loads, logs in with the token and joins the channels`, async () => {
    page = await openConsole(browserA);
    assert.equal(await page.title(), 'roipd console');
    await until('channel ops listed', () => ops(page).count());
    assert.equal(await page.locator('#login').isHidden(), true);
    assert.match(await page.locator('#ptt').textContent(), /PTT/);
    // The token moved from the address bar to sessionStorage.
    assert.equal(new URL(page.url()).searchParams.get('token'), null);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('roipd.token')), box.token);
    await waitIdle(page);
    await until('the link RTT', async () => /RTT \d+ ms/.test(await page.locator('#link').textContent()));
    await shot(page, 'console-idle.png');
  });

  test(`${name}: the simulated radio's audio reaches the browser`, async () => {
    const ch = ops(page);
    await until('the radio to take the floor', async () => (await ch.getAttribute('data-holder')) === 'other', 40000);
    assert.match(await ch.locator('.ch-activity').textContent(), /talking/);
    const level = await until('audio level > 0.05 on ops', async () => {
      const l = Number(await ch.getAttribute('data-level'));
      return l > 0.05 && l;
    }, 10000);
    // At least a second of 20 ms packets.
    const packets = await until('50 packets received on ops', async () => {
      const n = Number(await ch.getAttribute('data-packets'));
      return n >= 50 && n;
    }, 5000);
    assert.match(await page.locator('#ports tbody').textContent(), /RX active/);
    await shot(page, 'console-receiving.png');
    // Mute: the level meter drops to 0 and the audio element is muted; no renegotiation.
    await ch.locator('.listen input').uncheck();
    assert.equal(await ch.locator('audio').evaluate((a) => a.muted), true);
    await ch.locator('.listen input').check();
    await ch.locator('.volume input').fill('0.5');
    assert.equal(await ch.locator('audio').evaluate((a) => a.volume), 0.5);
    console.log(`  rx level ${level.toFixed(3)}, ${packets} packets`);
  });

  // Holding the floor is not being on air: pressing while radio1's squelch is open shows
  // WAITING, never TRANSMITTING, until the radio is keyed (docs/signaling.md, air).
  if (receivingRadio) test(`${name}: PTT while the radio receives shows WAITING, then TRANSMITTING once it is on air`, async () => {
    const ch = ops(page);
    await waitIdle(page);
    // Every state the floor display takes, with the PTT line's level when the test sees it.
    await page.evaluate(() => {
      window.floorStates = [];
      const el = document.querySelector('#floor-status');
      new MutationObserver(() => window.floorStates.push(el.dataset.state))
        .observe(el, { attributes: true, attributeFilter: ['data-state'] });
    });
    await until('the radio to take the floor', async () => (await ch.getAttribute('data-holder')) === 'other', 20000);
    await pressPtt(page);
    try {
      await waitingThenOnAir(ch);
    } finally {
      await page.mouse.up();
    }
    await until('idle after release', async () => (await floorState(page)) === 'idle', 3000);
    await until('the radio PTT line released', async () => !(await box.pttLine()), 10000);
  });

  const waitingThenOnAir = async (ch) => {
    await until('WAITING', async () => (await floorState(page)) === 'waiting', 5000);
    assert.match(await page.locator('#floor-status').textContent(), /WAITING for radio1 \(receiving\)/);
    assert.match(await ch.locator('.ch-activity').textContent(), /you are talking \(not on air on radio1 yet\)/);
    assert.equal(box.pttLine(), false, 'the radio is not keyed while it receives');
    await shot(page, 'console-waiting.png');
    await sleep(500);
    assert.equal(await floorState(page), 'waiting', 'still waiting while the squelch is open');
    assert.equal(box.pttLine(), false, 'still not keyed while the squelch is open');
    // The call ends (a demo call lasts 4 s): the radio keys and the console says so.
    await until('the radio PTT line keyed', () => box.pttLine(), 10000);
    await until('TRANSMITTING', async () => (await floorState(page)) === 'granted', 5000);
    assert.match(await page.locator('#floor-status').textContent(), /TRANSMITTING/);
    assert.equal(await ch.locator('.ch-activity').textContent(), 'you are talking');
    const states = await page.evaluate(() => window.floorStates);
    const firstGranted = states.indexOf('granted');
    assert.ok(firstGranted > states.indexOf('waiting') && states.indexOf('waiting') >= 0,
      `TRANSMITTING shown only after WAITING: ${states.join(' → ')}`);
    console.log(`  floor display: ${states.join(' → ')}`);
  };

  test(`${name}: holding PTT keys the radio and sends the microphone's tone`, async () => {
    await waitIdle(page);
    const toneBefore = await box.txTone();
    await pressPtt(page);
    await until('TRANSMITTING', async () => (await floorState(page)) === 'granted', 5000);
    await until('the radio PTT line keyed', () => box.pttLine(), 5000);
    await sleep(2500);
    assert.match(await page.locator('#floor-status').textContent(), /TRANSMITTING 0:0[1-9]/);
    assert.equal(await box.pttLine(), true, 'PTT line held while the button is held');
    await shot(page, 'console-transmitting.png');
    await page.mouse.up();
    await until('idle after release', async () => (await floorState(page)) === 'idle', 3000);
    const tone = await until('the 1 kHz tone at the radio output', async () => {
      const t = (await box.txTone()) - toneBefore;
      return t >= 1.0 && t;
    }, 5000);
    await until('the radio PTT line released', async () => !(await box.pttLine()), 10000);
    console.log(`  ${tone.toFixed(2)} s of 1 kHz tone transmitted`);

    // The space bar does the same.
    await waitIdle(page);
    await page.locator('body').click({ position: { x: 5, y: 5 } });
    await page.keyboard.down('Space');
    await until('TRANSMITTING (space)', async () => (await floorState(page)) === 'granted', 5000);
    await until('the radio PTT line keyed (space)', () => box.pttLine(), 5000);
    await page.keyboard.up('Space');
    await until('idle after space release', async () => (await floorState(page)) === 'idle', 3000);
  });

  test(`${name}: a second console pressing PTT at the same time is shown busy`, async () => {
    pageB = await openConsole(browserB);
    await waitIdle(page);
    await pressPtt(page);
    await until('A transmitting', async () => (await floorState(page)) === 'granted', 5000);
    await until('B sees A talking', async () => (await ops(pageB).getAttribute('data-holder')) === 'other', 5000);
    await pressPtt(pageB);
    await until('B busy', async () => ['busy', 'queued'].includes(await floorState(pageB)), 5000);
    const nameA = await page.evaluate(() => sessionStorage.getItem('roipd.name'));
    assert.match(await pageB.locator('#floor-status').textContent(), new RegExp(`BUSY \\(held by [^)]*${nameA}`));
    assert.equal(await floorState(page), 'granted', 'A keeps the floor');
    await shot(pageB, 'console-busy.png');
    await pageB.mouse.up();
    await page.mouse.up();
    await until('A idle', async () => (await floorState(page)) === 'idle', 3000);
  });

  test(`${name}: the page reconnects by itself after the box restarts`, async () => {
    await page.evaluate(() => { window.notReloaded = true; });
    await box.stop();
    await until('reconnecting shown', async () => (await connState(page)) === 'reconnecting', 10000);
    assert.match(await page.locator('#conn').textContent(), /reconnecting/);
    await box.start();
    await until('connected again', async () => (await connState(page)) === 'up', 20000);
    await until('B connected again', async () => (await connState(pageB)) === 'up', 20000);
    assert.equal(await page.evaluate(() => window.notReloaded), true, 'the same page, not a reload');
    // Media flows again: PTT is granted and keys the radio.
    await waitIdle(page);
    await pressPtt(page);
    await until('TRANSMITTING after restart', async () => (await floorState(page)) === 'granted', 5000);
    await until('the radio PTT line keyed after restart', () => box.pttLine(), 5000);
    await page.mouse.up();
    await until('idle', async () => (await floorState(page)) === 'idle', 3000);
  });
}
