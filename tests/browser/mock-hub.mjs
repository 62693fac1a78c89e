// A stand-in for `roipd demo` speaking docs/signaling.md: serves web/console, runs one floor
// arbiter per channel, a simulated radio "radio1" on "ops" that talks on a schedule, and does
// the hub's WebRTC side in a page of the test's Chromium (Node has no WebRTC of its own).
// It lets the console be developed and its edge cases (revoke, TOT lockout) be tested without
// the daemon; the real daemon is tested by demo.test.mjs.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { REPO } from './harness.mjs';

const ASSETS = { '/': ['index.html', 'text/html'], '/app.js': ['app.js', 'text/javascript'],
  '/style.css': ['style.css', 'text/css'] };

// Runs inside the media page: one RTCPeerConnection per console, a 440 Hz "radio" tone.
function mediaPageScript() {
  const ac = new AudioContext();
  const osc = ac.createOscillator();
  osc.frequency.value = 440;
  const gain = ac.createGain();
  gain.gain.value = 0;
  const dest = ac.createMediaStreamDestination();
  osc.connect(gain).connect(dest);
  osc.start();
  const peers = new Map();
  window.hub = {
    async answer(peer, sdp, mids) {
      peers.get(peer)?.pc.close();
      const pc = new RTCPeerConnection();
      const rx = {};
      peers.set(peer, { pc, rx });
      // Chromium computes a received track's level only while something plays it.
      pc.ontrack = (e) => { const a = new Audio(); a.srcObject = new MediaStream([e.track]); a.play(); };
      await pc.setRemoteDescription({ type: 'offer', sdp });
      for (const tr of pc.getTransceivers()) {
        tr.direction = 'sendrecv';
        rx[mids[tr.mid]] = tr.receiver;
        if (mids[tr.mid] === 'ops') await tr.sender.replaceTrack(dest.stream.getAudioTracks()[0]);
      }
      await pc.setLocalDescription(await pc.createAnswer());
      if (pc.iceGatheringState !== 'complete') {
        await new Promise((r) => pc.addEventListener('icegatheringstatechange',
          () => pc.iceGatheringState === 'complete' && r()));
      }
      return pc.localDescription.sdp;
    },
    close(peer) { peers.get(peer)?.pc.close(); peers.delete(peer); },
    tone(on) { ac.resume(); gain.gain.value = on ? 0.5 : 0; },
    async level(peer, channel) {
      const r = peers.get(peer)?.rx[channel];
      if (!r) return 0;
      let level = 0;
      (await r.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') level = s.audioLevel ?? 0; });
      return level;
    },
  };
}

export class MockBox {
  constructor({ browser, port, lines, token = 'demo', schedule = { every: 6000, talk: 2500 }, desk = false }) {
    Object.assign(this, { browser, port, lines, token, schedule });
    // A desk box: its desk port "desk" on both channels, controlled with `desk` commands.
    this.desk = desk ? { port: 'desk', selected: 'ops', patches: [], channels: [
      { name: 'ops', listen: true, volume_db: 0, rx: false, tx: false, busy: false },
      { name: 'fire', listen: true, volume_db: -6, rx: false, tx: false, busy: false }] } : null;
    this.url = `http://127.0.0.1:${port}`;
    this.channels = [{ name: 'ops', label: 'Operations' }, { name: 'fire', label: 'Fire' }];
    this.log = [];
    fs.mkdirSync(lines, { recursive: true });
    this.setLine('radio1-ptt', false);
  }

  setLine(name, on) { fs.writeFileSync(path.join(this.lines, name), on ? '1\n' : '0\n'); }

  async start() {
    this.nextPeer = 1;
    this.nextId = 1;
    this.members = new Map(); // id -> { id, peer, channel, name, priority, ws }
    this.floor = new Map(this.channels.map((c) => [c.name, null])); // channel -> holder member
    this.radio = { id: this.nextId++, channel: 'ops', name: 'radio1@mock', priority: 0, ws: null };
    this.members.set(this.radio.id, this.radio);
    this.port1 = { name: 'radio1', channel: 'ops', rx: false, tx: false, locked_out: false, inhibited: false };
    this.mediaPage = await (await this.browser.newContext()).newPage();
    await this.mediaPage.evaluate(mediaPageScript);
    this.server = http.createServer((req, res) => {
      const url = new URL(req.url, this.url);
      if (url.pathname === '/healthz') return res.end('ok');
      const a = ASSETS[url.pathname];
      if (!a) { res.statusCode = 404; return res.end('not found'); }
      res.setHeader('content-type', a[1]);
      res.end(fs.readFileSync(path.join(REPO, 'web/console', a[0])));
    });
    const { WebSocketServer } = await import('ws').catch((err) => {
      throw new Error(`npm package ws is not installed: run \`npm ci\` in tests/browser (${err.message})`);
    });
    this.wss = new WebSocketServer({ server: this.server, path: '/ws' });
    this.wss.on('connection', (ws) => this.session(ws));
    await new Promise((r) => this.server.listen(this.port, '127.0.0.1', r));
    this.timer = setInterval(() => this.radioTalk(), this.schedule.every);
  }

  async stop() {
    clearInterval(this.timer);
    clearTimeout(this.radioStop);
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
    await new Promise((r) => this.server.close(r));
    await this.mediaPage.context().close();
    this.setLine('radio1-ptt', false);
  }

  radioTalk() {
    if (this.floor.get('ops')) return; // a console holds the floor: the radio's COR is ignored
    this.grant(this.radio);
    this.port1.rx = true;
    this.ports();
    this.mediaPage.evaluate(() => window.hub.tone(true)).catch(() => {});
    this.radioStop = setTimeout(() => this.radioIdle(), this.schedule.talk);
  }

  radioIdle() {
    this.mediaPage.evaluate(() => window.hub.tone(false)).catch(() => {});
    this.port1.rx = false;
    this.ports();
    if (this.floor.get('ops') === this.radio) this.freeFloor('ops');
  }

  // ---- floor arbiter: one holder, higher priority preempts, equal/lower is denied busy ----
  grant(m) {
    this.floor.set(m.channel, m);
    if (m.ws) this.sendTo(m.ws, { type: 'floor', channel: m.channel, id: m.id, event: 'granted' });
    this.broadcast(m.channel, { type: 'floor', channel: m.channel, event: 'taken',
      holder: { id: m.id, name: m.name }, priority: m.priority });
    if (m.channel === 'ops' && m !== this.radio) { this.setLine('radio1-ptt', true); this.port1.tx = true; this.ports(); }
  }

  freeFloor(channel) {
    this.floor.set(channel, null);
    this.broadcast(channel, { type: 'floor', channel, event: 'idle' });
    if (channel === 'ops') { this.setLine('radio1-ptt', false); this.port1.tx = false; this.ports(); }
  }

  request(m) {
    const h = this.floor.get(m.channel);
    if (!h) return this.grant(m);
    if (h === m) return this.sendTo(m.ws, { type: 'floor', channel: m.channel, id: m.id, event: 'granted' });
    if (m.priority > h.priority) {
      if (h.ws) this.sendTo(h.ws, { type: 'floor', channel: m.channel, id: h.id, event: 'revoke', cause: 'preempted',
        holder: { id: m.id, name: m.name } });
      if (h === this.radio) { clearTimeout(this.radioStop); this.radioIdle(); }
      return this.grant(m);
    }
    this.sendTo(m.ws, { type: 'floor', channel: m.channel, id: m.id, event: 'deny', cause: 'busy',
      holder: { id: h.id, name: h.name } });
  }

  // ---- sessions ----
  sendTo(ws, msg) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); }

  broadcast(channel, msg) {
    const sockets = new Set([...this.members.values()].filter((m) => m.channel === channel && m.ws).map((m) => m.ws));
    for (const ws of sockets) this.sendTo(ws, msg);
  }

  roster(channel) {
    const members = [...this.members.values()].filter((m) => m.channel === channel)
      .map((m) => ({ id: m.id, name: m.name, priority: m.priority }));
    this.broadcast(channel, { type: 'roster', channel, members });
  }

  ports() {
    const msg = { type: 'ports', ports: [this.port1] };
    for (const ws of this.wss.clients) this.sendTo(ws, msg);
  }

  session(ws) {
    const peer = this.nextPeer++;
    let mine = [];
    ws.on('message', async (data) => {
      let m;
      try { m = JSON.parse(data); } catch { return this.sendTo(ws, { type: 'error', code: 'bad_request', message: 'not JSON' }); }
      this.log.push({ peer, ...m, sdp: m.sdp && '…' });
      if (m.type === 'hello') {
        if (m.token !== this.token) {
          this.sendTo(ws, { type: 'error', code: 'unauthorized', message: 'bad token' });
          return ws.close(4001, 'unauthorized');
        }
        mine = (m.members || []).map((r) => ({ id: this.nextId++, peer, ws, channel: r.channel,
          name: `${r.key}@${m.name}`, priority: Math.min(r.priority ?? 0, 255) }));
        for (const x of mine) this.members.set(x.id, x);
        this.sendTo(ws, { type: 'welcome', peer, members: mine.map((x) => ({ key: 'console', channel: x.channel, id: x.id })),
          channels: this.channels.map((c) => ({ ...c, holder: this.floor.get(c.name)
            ? { id: this.floor.get(c.name).id, name: this.floor.get(c.name).name } : null })) });
        for (const c of new Set(mine.map((x) => x.channel))) this.roster(c);
        this.sendTo(ws, { type: 'ports', ports: [this.port1] });
        if (this.desk) this.sendTo(ws, { type: 'desk_state', ...this.desk });
      } else if (m.type === 'desk') {
        const refused = this.deskCommand(m);
        if (refused) return this.sendTo(ws, { type: 'error', code: 'bad_request', message: refused });
        this.sendTo(ws, { type: 'desk', port: m.port });
        for (const c of this.wss.clients) this.sendTo(c, { type: 'desk_state', ...this.desk });
      } else if (m.type === 'offer') {
        const sdp = await this.mediaPage.evaluate(([p, s, mids]) => window.hub.answer(p, s, mids), [peer, m.sdp, m.mids]);
        this.sendTo(ws, { type: 'answer', sdp });
      } else if (m.type === 'floor') {
        const x = mine.find((y) => y.id === m.id);
        if (!x) return this.sendTo(ws, { type: 'error', code: 'bad_request', message: 'unknown member' });
        if (m.action === 'request') this.request(x);
        if (m.action === 'release' && this.floor.get(x.channel) === x) this.freeFloor(x.channel);
      } else if (m.type === 'ping') {
        this.sendTo(ws, { type: 'pong' });
      } else {
        this.sendTo(ws, { type: 'error', code: 'bad_request', message: `unknown type ${m.type}` });
      }
    });
    ws.on('close', () => {
      for (const x of mine) {
        this.members.delete(x.id);
        if (this.floor.get(x.channel) === x) this.freeFloor(x.channel);
      }
      for (const c of new Set(mine.map((x) => x.channel))) this.roster(c);
      this.mediaPage.evaluate((p) => window.hub.close(p), peer).catch(() => {});
    });
  }

  /** Apply a console's desk command like the daemon's desk does; a reason when refused. */
  deskCommand(m) {
    const d = this.desk;
    if (!d || m.port !== d.port) return `no desk port \`${m.port}\``;
    const a = m.action || {};
    const ch = d.channels.find((c) => c.name === a.channel);
    switch (a.action) {
      case 'select': if (!ch) return 'unknown channel'; d.selected = ch.name; return null;
      case 'listen': if (!ch) return 'unknown channel'; ch.listen = !!a.on; return null;
      case 'volume':
        if (!ch || !(a.db >= -60 && a.db <= 20)) return 'volume out of range';
        ch.volume_db = a.db; return null;
      case 'ptt': (ch || d.channels.find((c) => c.name === d.selected)).tx = !!a.on; return null;
      case 'all_call': for (const c of d.channels) c.tx = !!a.on; return null;
      case 'patch': {
        const [x, y] = a.channels || [];
        const i = d.patches.findIndex((p) => (p[0] === x && p[1] === y) || (p[0] === y && p[1] === x));
        if (x === y) return 'a patch joins two different channels';
        if (a.on) { if (i >= 0) return 'these channels are already patched'; d.patches.push([x, y]); }
        else { if (i < 0) return 'these channels are not patched'; d.patches.splice(i, 1); }
        return null;
      }
      default: return `unknown desk action \`${a.action}\``;
    }
  }

  /** The desk commands consoles sent, oldest first. */
  deskLog() { return this.log.filter((m) => m.type === 'desk').map((m) => m.action); }

  /** The PTT line of the radio transmitting what the consoles say. */
  pttLine() { return fs.readFileSync(path.join(this.lines, 'radio1-ptt'), 'utf8').trim() === '1'; }

  /** Level of a console's audio arriving at the hub on `channel` (the mock's "radio output"). */
  async txLevel(channel = 'ops') {
    let best = 0;
    for (const x of this.members.values()) {
      if (x.peer && x.channel === channel) {
        best = Math.max(best, await this.mediaPage.evaluate(([p, c]) => window.hub.level(p, c), [x.peer, channel]));
      }
    }
    return best;
  }

  /** Make the sim radio's port show a TOT lockout / inhibit (for the ports view). */
  setPort(flags) { Object.assign(this.port1, flags); this.ports(); }
}
