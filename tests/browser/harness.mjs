// Shared pieces of the browser tests: prerequisites, ports, the fake microphone WAV, Chromium.
import fs from 'node:fs';
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '../..');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Fail (never skip) with the package to install when something the tests need is missing. */
export async function prerequisites() {
  const [major] = process.versions.node.split('.').map(Number);
  if (major < 18) {
    throw new Error(`Node.js ${process.versions.node} is too old (need >= 18): install Debian package nodejs (scripts/setup-debian --test)`);
  }
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} not found: install Debian package chromium (scripts/setup-debian --test)`);
  }
  try {
    return (await import('playwright-core')).chromium;
  } catch (err) {
    throw new Error(`npm package playwright-core is not installed: run \`npm ci\` in tests/browser (needs Debian package npm) (${err.message})`);
  }
}

/** Address the box listens on: 127.0.0.1, or the veth address inside in-netns.sh. */
export const HOST = process.env.ROIPD_TEST_HOST || '127.0.0.1';

/** A port free on HOST for both TCP and UDP (the hub's media socket shares the number). */
export async function freePort(host = HOST) {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, host, () => { const p = s.address().port; s.close(() => resolve(p)); });
    });
    const udpFree = await new Promise((resolve) => {
      const u = dgram.createSocket('udp4');
      u.once('error', () => resolve(false));
      u.bind(port, host, () => u.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('no free port');
}

export function tmpDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A mono 16-bit WAV holding a sine tone (the fake microphone; Chromium loops it). */
export function toneWav(file, { freq = 1000, seconds = 4, rate = 48000, amplitude = 0.5 } = {}) {
  const n = seconds * rate;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write('WAVE', 8);
  buf.write('fmt ', 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34);
  buf.write('data', 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    buf.writeInt16LE(Math.round(amplitude * 32767 * Math.sin(2 * Math.PI * freq * i / rate)), 44 + i * 2);
  }
  fs.writeFileSync(file, buf);
  return file;
}

/**
 * Read a 16-bit PCM WAV as it is being written (the data size in the header may not be final):
 * samples of the first channel after the `data` chunk header, to the end of the file.
 */
export function readWav(file) {
  const b = fs.readFileSync(file);
  if (b.length < 12 || b.toString('ascii', 0, 4) !== 'RIFF') throw new Error(`${file}: not a WAV`);
  let off = 12, rate = 0, channels = 1, bits = 16;
  while (off + 8 <= b.length) {
    const id = b.toString('ascii', off, off + 4);
    const size = b.readUInt32LE(off + 4);
    if (id === 'fmt ') {
      channels = b.readUInt16LE(off + 10); rate = b.readUInt32LE(off + 12); bits = b.readUInt16LE(off + 22);
    }
    if (id === 'data') {
      if (bits !== 16) throw new Error(`${file}: ${bits}-bit samples, expected 16`);
      const start = off + 8, frames = Math.floor((b.length - start) / (2 * channels));
      const samples = new Float32Array(frames);
      for (let i = 0; i < frames; i++) samples[i] = b.readInt16LE(start + i * 2 * channels) / 32768;
      return { rate, samples };
    }
    off += 8 + size + (size & 1);
  }
  return { rate, samples: new Float32Array(0) };
}

/**
 * How much of `freq` there is: per 20 ms window, the RMS and the share of the window's power at
 * `freq` (Goertzel). Returns the seconds of windows where the tone dominates above `minRms`.
 */
export function toneSeconds({ rate, samples }, freq, minRms = 0.02) {
  const win = Math.round(rate * 0.02);
  let good = 0;
  for (let s = 0; s + win <= samples.length; s += win) {
    let energy = 0, s1 = 0, s2 = 0;
    const k = 2 * Math.cos(2 * Math.PI * freq / rate);
    for (let i = s; i < s + win; i++) {
      const x = samples[i];
      energy += x * x;
      const s0 = x + k * s1 - s2; s2 = s1; s1 = s0;
    }
    const rms = Math.sqrt(energy / win);
    const tonePower = 2 * (s1 * s1 + s2 * s2 - k * s1 * s2) / (win * win); // mean square at freq
    const share = energy > 0 ? tonePower / (energy / win) : 0;
    if (rms >= minRms && share > 0.5) good += 0.02;
  }
  return good;
}

/**
 * Chromium with a fake microphone playing `wav`, from the Debian package; never a download.
 * `executablePath`: a wrapper that runs it elsewhere (e.g. `ip netns exec NS chromium`).
 */
export async function launch(chromium, wav, extraArgs = [], executablePath = CHROMIUM) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      ...extraArgs,
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${wav}`,
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value; fail with `what` (and the last value) after `ms`. */
export async function until(what, fn, ms = 10000, every = 100) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); } catch (err) { last = err; }
    if (last && !(last instanceof Error)) return last;
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

export const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';

/**
 * Debian's Firefox ESR through WebDriver BiDi (playwright-core's `moz-firefox` channel), with
 * Firefox's own fake microphone (a tone). Firefox gathers no ICE candidates on loopback
 * addresses: run its tests through in-netns.sh, which gives the box a veth address.
 */
export async function launchFirefox() {
  if (!fs.existsSync(FIREFOX)) {
    throw new Error(`${FIREFOX} not found: install Debian package firefox-esr (scripts/setup-debian --test)`);
  }
  const { firefox } = await import('playwright-core');
  return firefox.launch({
    channel: 'moz-firefox',
    executablePath: FIREFOX,
    headless: true,
    firefoxUserPrefs: {
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
      'media.autoplay.default': 0,
      // The microphone needs a secure context; http://<veth address> is not one by itself.
      'dom.securecontext.allowlist': HOST,
    },
  });
}
