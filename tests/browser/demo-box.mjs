// `roipd demo` (a standalone box with a simulated radio "radio1" on channel "ops") as a test
// fixture: started on a free port, its radio's PTT line a file (--lines), what the radio
// transmits recorded to a WAV (--record).
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { HOST, readWav, REPO, sleep, toneSeconds } from './harness.mjs';

export const BIN = process.env.ROIPD_BIN || path.join(REPO, 'target/debug/roipd');

export class DemoBox {
  // `tls`: `roipd demo --tls`, HTTPS/WSS with the self-signed certificate it keeps in `dir`.
  // `mqtt`: a broker URL (`roipd demo --mqtt`). `extra`: more `roipd demo` arguments (e.g.
  // --ice-tcp-listen).
  constructor({ dir, port, trafficEvery = 10, tls = false, mqtt = null, extra = [] }) {
    this.extra = extra;
    this.dir = dir;
    this.mqtt = mqtt;
    this.trafficEvery = trafficEvery;
    this.port = port;
    this.tls = tls;
    this.url = `${tls ? 'https' : 'http'}://${HOST}:${port}`;
    this.token = 'demo';
    this.lines = path.join(dir, 'lines');
    this.record = path.join(dir, 'radio1-tx.wav');
    this.logFile = path.join(dir, 'roipd.log');
    this.runs = 0;
  }

  async start() {
    if (!fs.existsSync(BIN)) throw new Error(`${BIN} not found: run \`cargo build\` first (or set ROIPD_BIN)`);
    const log = fs.openSync(this.logFile, 'a');
    fs.writeSync(log, `---- start ${++this.runs}\n`);
    this.child = spawn(BIN, ['demo', '--listen', `${HOST}:${this.port}`, '--dir', this.dir,
      '--lines', this.lines, '--record', this.record, '--traffic-every', String(this.trafficEvery),
      ...(this.tls ? ['--tls'] : []), ...(this.mqtt ? ['--mqtt', this.mqtt] : []), ...this.extra],
    { stdio: ['ignore', log, log], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
    fs.closeSync(log);
    this.exited = new Promise((r) => this.child.once('exit', (code, sig) => r(code ?? sig)));
    const end = Date.now() + 20000;
    for (;;) {
      const done = await Promise.race([this.exited, sleep(200).then(() => null)]);
      if (done !== null) throw new Error(`roipd demo exited (${done}):\n${this.log()}`);
      try {
        if (await this.healthy()) return;
      } catch { /* not listening yet */ }
      if (Date.now() > end) throw new Error(`roipd demo not healthy after 20 s:\n${this.log()}`);
    }
  }

  /** GET /healthz; over TLS only from the certificate the demo made (its fingerprint). */
  async healthy() {
    if (!this.tls) return (await fetch(`${this.url}/healthz`)).ok;
    const want = this.fingerprint();
    if (!want) return false;
    return new Promise((resolve) => {
      const req = https.get(`${this.url}/healthz`, { rejectUnauthorized: false }, (res) => {
        const got = res.socket.getPeerCertificate().fingerprint256;
        res.resume();
        resolve(res.statusCode === 200 && got === want);
      });
      req.on('error', () => resolve(false));
    });
  }

  certificate() {
    try { return new crypto.X509Certificate(fs.readFileSync(path.join(this.dir, 'hub-cert.pem'))); } catch { return null; }
  }

  /** SHA-256 of the certificate, `AB:CD:…`, as the daemon logs it. */
  fingerprint() { return this.certificate()?.fingerprint256 ?? null; }

  /** base64 SHA-256 of the certificate's public key, for Chromium's --ignore-certificate-errors-spki-list. */
  spkiHash() {
    const spki = this.certificate().publicKey.export({ type: 'spki', format: 'der' });
    return crypto.createHash('sha256').update(spki).digest('base64');
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const r = await Promise.race([this.exited, sleep(10000).then(() => 'timeout')]);
    if (r === 'timeout') { this.child.kill('SIGKILL'); await this.exited; throw new Error(`roipd demo ignored SIGTERM:\n${this.log()}`); }
  }

  log() { try { return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-40).join('\n'); } catch { return ''; } }

  /** Drive the simulated radio's emergency input (its file in the lines folder). */
  emergencyLine(on) {
    fs.writeFileSync(path.join(this.lines, 'radio1-emergency'), on ? '1\n' : '0\n');
  }

  pttLine() {
    try { return fs.readFileSync(path.join(this.lines, 'radio1-ptt'), 'utf8').trim() === '1'; } catch { return false; }
  }

  /** Seconds of the fake microphone's 1 kHz tone in what the radio transmitted so far. */
  async txTone() {
    if (!fs.existsSync(this.record)) return 0;
    return toneSeconds(readWav(this.record), 1000);
  }
}
