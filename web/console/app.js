// roipd web PTT console. Protocol: docs/signaling.md (hello/welcome, offer/answer, floor,
// roster, ports, desk, ping). Plain browser APIs only: WebSocket, RTCPeerConnection, getUserMedia.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
// Only touch text that changed, so live regions announce changes, not every refresh.
const setText = (el, text) => { if (el.textContent !== text) el.textContent = text; };
const params = new URLSearchParams(location.search);
const PRIORITY = Number(params.get('priority') ?? 100);
const NAME = sessionStorage.getItem('roipd.name') ||
  'console-' + Math.random().toString(16).slice(2, 6);
sessionStorage.setItem('roipd.name', NAME);

const S = {
  token: null,
  ws: null,
  pc: null,
  session: 0,          // bumped on every (re)connect; stale callbacks compare against it
  mic: null,           // MediaStreamTrack from getUserMedia, kept across reconnects
  known: JSON.parse(sessionStorage.getItem('roipd.channels') || '[]'), // channel names to join
  forbidden: new Set(), // channels the token may not join (from `forbidden` errors)
  channels: new Map(), // name -> channel state
  byId: new Map(),     // member id -> channel state
  tx: null,            // name of the channel PTT talks on
  ptt: { pressed: false, state: 'idle', since: 0, text: 'Idle' },
  backoff: 500,
  retry: null,
  lastRx: 0,
  prevStats: new Map(),
  emergencies: new Map(), // channel -> {source, kind, shownAt}
  alert: null,            // WebAudio alert tone while any emergency is active
};

// ---------- connection ----------------------------------------------------------------------

function setConn(state, text) {
  const el = $('#conn');
  el.dataset.state = state;
  el.textContent = text;
}

function start() {
  // `#token=…` (what the demo prints: a fragment never reaches the server or its logs), or
  // `?token=…` (older links; that one did cross the network in the request line).
  const frag = new URLSearchParams(location.hash.slice(1));
  const t = frag.get('token') || params.get('token');
  if (t) {
    sessionStorage.setItem('roipd.token', t);
    params.delete('token'); // keep the secret out of the address bar and history
    history.replaceState(null, '', location.pathname + (params.size ? '?' + params : ''));
  }
  S.token = sessionStorage.getItem('roipd.token');
  if (S.token) connect(); else showLogin('');
}

function showLogin(error) {
  $('#login').hidden = false;
  $('#logout').hidden = true;
  $('#login-error').textContent = error;
  $('#token').focus();
  setConn('off', 'not connected');
}

$('#login').addEventListener('submit', (e) => {
  e.preventDefault();
  S.token = $('#token').value.trim();
  if (!S.token) return;
  sessionStorage.setItem('roipd.token', S.token);
  $('#login').hidden = true;
  connect();
});

$('#logout').addEventListener('click', () => {
  sessionStorage.removeItem('roipd.token');
  S.token = null;
  teardown();
  clearTimeout(S.retry);
  $('#console').hidden = true;
  showLogin('');
});

function connect() {
  clearTimeout(S.retry);
  teardown();
  const session = ++S.session;
  if (S.backoff > 500) setConn('reconnecting', 'reconnecting…'); else setConn('connecting', 'connecting…');
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  S.ws = ws;
  const members = S.known.map((channel) => ({ key: 'console', channel, priority: PRIORITY }));
  ws.onopen = () => {
    S.lastRx = Date.now();
    send({ type: 'hello', token: S.token, name: NAME, members });
  };
  ws.onmessage = (e) => {
    if (session !== S.session) return;
    S.lastRx = Date.now();
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    onMessage(m, session);
  };
  ws.onclose = (e) => {
    if (session !== S.session) return;
    if (e.code === 4001) { S.token = null; sessionStorage.removeItem('roipd.token'); teardown(); return showLogin('Token refused.'); }
    reconnect('connection closed');
  };
}

function send(msg) {
  if (S.ws && S.ws.readyState === WebSocket.OPEN) S.ws.send(JSON.stringify(msg));
}

function teardown() {
  pttOff();
  if (S.ws) { S.ws.onclose = S.ws.onmessage = null; S.ws.close(); S.ws = null; }
  if (S.pc) { S.pc.close(); S.pc = null; }
  S.byId.clear();
  S.prevStats.clear();
}

function reconnect(why) {
  teardown();
  ++S.session;
  if (!S.token) return;
  const delay = S.backoff;
  S.backoff = Math.min(S.backoff * 2, 5000);
  setConn('reconnecting', `reconnecting… (${why}, retry in ${(delay / 1000).toFixed(1)} s)`);
  for (const ch of S.channels.values()) { ch.holder = null; renderChannel(ch); }
  setFloor('idle', 'Offline');
  S.retry = setTimeout(connect, delay);
}

// ---------- signaling -----------------------------------------------------------------------

function onMessage(m, session) {
  switch (m.type) {
    case 'welcome': return onWelcome(m, session);
    case 'answer':
      return S.pc && S.pc.setRemoteDescription({ type: 'answer', sdp: m.sdp })
        .catch((err) => reconnect('bad answer: ' + err.message));
    case 'floor': return onFloor(m);
    case 'roster': return onRoster(m);
    case 'roster_delta': return onRosterDelta(m);
    case 'ports': return renderPorts(m.ports || []);
    case 'desk_state': return renderDesk(m);
    case 'air': return onAir(m);
    case 'desk': S.deskPending = false; return setText($('#desk-error'), '');
    case 'emergency': return onEmergency(m);
    case 'pong': return;
    case 'error':
      if (m.code === 'unauthorized') return; // the close (4001) follows
      if (String(m.message).startsWith('desk') || S.deskPending) {
        S.deskPending = false;
        setText($('#desk-error'), m.message);
      }
      if (m.code === 'forbidden') { // skip the channel this token may not join; the retry follows
        for (const c of S.known) if (String(m.message).includes(c)) S.forbidden.add(c);
        S.known = S.known.filter((c) => !S.forbidden.has(c));
      }
      console.warn('roipd error', m);
      return;
  }
}

function onWelcome(m, session) {
  const names = (m.channels || []).map((c) => c.name).filter((n) => !S.forbidden.has(n));
  const joined = (m.members || []).map((x) => x.channel);
  // The hub joins us only on the channels named in hello; learn the full list, then rejoin.
  if (names.some((n) => !joined.includes(n)) && names.join() !== S.known.join()) {
    S.known = names;
    sessionStorage.setItem('roipd.channels', JSON.stringify(names));
    return connect();
  }
  S.iceServers = Array.isArray(m.ice_servers) ? m.ice_servers : [];
  $('#login').hidden = true;
  $('#console').hidden = false;
  $('#whoami').textContent = `You are ${NAME}.`;
  $('#logout').hidden = false;
  setConn('signaling', 'connected, starting media…');
  // The hub tells every active emergency again after welcome.
  S.emergencies.clear();
  renderEmergencies();
  // Rebuild the channel list; keep listen/volume choices across reconnects.
  const old = S.channels;
  S.channels = new Map();
  $('#channels').replaceChildren();
  for (const c of m.channels || []) {
    const prev = old.get(c.name);
    const ch = makeChannel(c, prev);
    S.channels.set(c.name, ch);
  }
  for (const x of m.members || []) {
    const ch = S.channels.get(x.channel);
    if (ch) { ch.id = x.id; S.byId.set(x.id, ch); }
  }
  if (!S.tx || !S.byId.size || ![...S.byId.values()].some((c) => c.name === S.tx)) {
    S.tx = S.byId.size ? [...S.byId.values()][0].name : null;
  }
  selectTx(S.tx);
  $('#emergency').disabled = !S.tx;
  for (const ch of S.channels.values()) renderChannel(ch);
  historyChannels();
  loadHistory();
  startMedia(session).catch((err) => session === S.session && reconnect('media: ' + err.message));
}

function onFloor(m) {
  const ch = S.channels.get(m.channel) || S.byId.get(m.id);
  if (!ch) return;
  if (m.event === 'taken') ch.holder = m.holder || { name: '?' };
  if (m.event === 'idle') {
    ch.holder = null;
    // A transmission ended: its recording is written when the file is closed, just after.
    if (H.loaded) { clearTimeout(H.refresh); H.refresh = setTimeout(loadHistory, 1500); }
  }
  renderChannel(ch);
  if (ch.name !== S.tx) return;
  const mine = m.id !== undefined && m.id === ch.id;
  const p = S.ptt.state;
  switch (m.event) {
    case 'granted':
      if (!mine) return;
      if (!S.ptt.pressed) return; // released before the grant arrived: release already sent
      pttOn(ch);
      return showTalk(ch);
    case 'deny':
      if (!mine) return;
      return setFloor('busy', m.cause === 'busy'
        ? `BUSY (held by ${m.holder?.name ?? ch.holder?.name ?? 'someone'})` : `BUSY (${m.cause})`);
    case 'queued':
      if (!mine) return;
      return setFloor('queued', `BUSY (held by ${ch.holder?.name ?? 'someone'}), queued #${m.position}`);
    case 'revoke':
      if (!mine) return;
      pttOff();
      return setFloor('revoked', 'REVOKED (' + ({ preempted: 'preempted', max_talk: 'max talk time',
        no_media: 'no media' }[m.cause] || m.cause) + (m.holder ? ` by ${m.holder.name}` : '') + ')');
    case 'taken':
      if (m.holder && m.holder.id === ch.id) return; // our own grant, broadcast
      if (talking(p)) { pttOff(); return setFloor('revoked', `REVOKED (taken by ${m.holder?.name})`); }
      return;
    case 'idle':
      if (talking(p)) { pttOff(); return setFloor('revoked', 'REVOKED (floor lost)'); }
      if (p === 'busy' && S.ptt.pressed) return setFloor('busy', 'BUSY (floor now free: release and press again)');
      return;
  }
}

// Holding the floor is not being on air: a radio still receiving keys only when its squelch
// closes. `air` lists the radios that should carry the talker and whether each does.
const talking = (state) => state === 'granted' || state === 'waiting';

function showTalk(ch) {
  const waiting = (ch.air || []).filter((r) => r.state === 'waiting');
  if (!waiting.length) {
    if (S.ptt.state !== 'granted') setFloor('granted', 'TRANSMITTING');
    return;
  }
  const who = waiting.map((r) => r.port + (r.reason ? ` (${r.reason.replace('_', ' ')})` : '')).join(', ');
  const since = S.ptt.state === 'waiting' ? S.ptt.since : 0;
  setFloor('waiting', `WAITING for ${who}: not on air yet`);
  if (since) S.ptt.since = since;
}

function onAir(m) {
  const ch = S.channels.get(m.channel);
  if (!ch) return;
  ch.air = m.radios || [];
  renderChannel(ch);
  if (ch.name === S.tx && talking(S.ptt.state)) showTalk(ch);
}

function onRoster(m) {
  const ch = S.channels.get(m.channel);
  if (!ch) return;
  ch.roster = m.members || [];
  renderRoster(ch);
}

// After the whole roster on join, the hub sends only who joined or changed (`add`, replacing
// the entry with the same id) and who left (`remove`).
function onRosterDelta(m) {
  const ch = S.channels.get(m.channel);
  if (!ch) return;
  const gone = new Set(m.remove || []);
  const add = new Map((m.add || []).map((r) => [r.id, r]));
  ch.roster = ch.roster.filter((r) => !gone.has(r.id)).map((r) => add.get(r.id) || r);
  for (const r of add.values()) if (!ch.roster.some((x) => x.id === r.id)) ch.roster.push(r);
  renderRoster(ch);
}

function renderRoster(ch) {
  const ul = $('.ch-roster ul', ch.el);
  ul.replaceChildren(...ch.roster.map((r) => {
    const li = document.createElement('li');
    li.textContent = r.name + (r.priority ? ` (prio ${r.priority})` : '');
    return li;
  }));
  $('.ch-roster summary', ch.el).textContent = `Roster (${ch.roster.length})`;
}

// ---------- media ---------------------------------------------------------------------------

async function getMic() {
  if (S.mic && S.mic.readyState === 'live') return S.mic;
  if (!navigator.mediaDevices) { // only secure contexts have it
    $('#mic-status').textContent = 'No microphone on an insecure page: open the console over https:// or on localhost. Listening only.';
    return null;
  }
  try {
    const s = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    S.mic = s.getAudioTracks()[0];
    $('#mic-status').textContent = '';
  } catch (err) {
    S.mic = null;
    $('#mic-status').textContent = `No microphone (${err.name}): listening only.`;
  }
  return S.mic;
}

async function startMedia(session) {
  if (!S.byId.size) return setConn('up', 'connected (no channels for this token)');
  await getMic();
  if (session !== S.session) return;
  // STUN/TURN from the hub (`[hub] ice_servers`, TURN with time-limited credentials).
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers: S.iceServers || [] });
  S.pc = pc;
  const order = [...S.byId.values()];
  for (const ch of order) {
    ch.tr = pc.addTransceiver('audio', { direction: 'sendrecv' });
  }
  pc.ontrack = (e) => {
    const ch = order.find((c) => c.tr === e.transceiver);
    if (!ch) return;
    ch.audio.srcObject = new MediaStream([e.track]);
    applyListen(ch);
    ch.audio.play().catch(() => { $('#mic-status').textContent = 'Click or press a key to enable audio.'; });
  };
  pc.onconnectionstatechange = () => {
    if (session !== S.session) return;
    const st = pc.connectionState;
    if (st === 'connected') { S.backoff = 500; setConn('up', 'connected'); }
    if (st === 'failed') reconnect('media failed');
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceComplete(pc);
  if (session !== S.session) return;
  const mids = {};
  for (const ch of order) mids[ch.tr.mid] = ch.name;
  send({ type: 'offer', sdp: pc.localDescription.sdp, mids });
}

function iceComplete(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const t = setTimeout(resolve, 3000); // send what we have if gathering stalls
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
}

// The mic goes on a channel's sender only while that channel's floor is ours.
function pttOn(ch) {
  if (ch.tr && S.mic) ch.tr.sender.replaceTrack(S.mic).catch(() => {});
}

function pttOff() {
  for (const ch of S.channels.values()) {
    if (ch.tr && ch.tr.sender.track) ch.tr.sender.replaceTrack(null).catch(() => {});
  }
}

// ---------- PTT -----------------------------------------------------------------------------

function setFloor(state, text) {
  S.ptt.state = state;
  S.ptt.text = text;
  S.ptt.since = Date.now();
  const btn = $('#ptt');
  btn.dataset.state = state;
  $('#floor-status').dataset.state = state;
  setText($('#floor-text'), text);
  setText($('#talk-timer'), '');
}

function press() {
  const ch = S.channels.get(S.tx);
  if (S.ptt.pressed || !ch || ch.id === undefined || !S.ws) return;
  S.ptt.pressed = true;
  $('#ptt').setAttribute('aria-pressed', 'true');
  setFloor('requesting', 'requesting…');
  send({ type: 'floor', id: ch.id, action: 'request' });
}

function release() {
  if (!S.ptt.pressed) return;
  S.ptt.pressed = false;
  $('#ptt').setAttribute('aria-pressed', 'false');
  const ch = S.channels.get(S.tx);
  pttOff();
  if (ch && ch.id !== undefined && ['requesting', 'granted', 'waiting', 'queued'].includes(S.ptt.state)) {
    send({ type: 'floor', id: ch.id, action: 'release' });
  }
  setFloor('idle', 'Idle');
}

const ptt = $('#ptt');
ptt.addEventListener('pointerdown', (e) => {
  if (e.button !== 0) return;
  ptt.setPointerCapture(e.pointerId);
  press();
});
for (const ev of ['pointerup', 'pointercancel', 'lostpointercapture']) ptt.addEventListener(ev, release);
ptt.addEventListener('contextmenu', (e) => e.preventDefault());
ptt.addEventListener('click', (e) => e.preventDefault());

// Space is PTT unless another control has focus (then it keeps its usual meaning there).
const ownsSpace = (el) => el !== ptt && el.closest?.('input, select, textarea, button, summary, a, [contenteditable]');
document.addEventListener('keydown', (e) => {
  if (e.code !== 'Space' || ownsSpace(e.target) || $('#console').hidden) return;
  e.preventDefault();
  if (!e.repeat) press();
});
document.addEventListener('keyup', (e) => {
  if (e.code !== 'Space' || !S.ptt.pressed) return;
  e.preventDefault();
  release();
});
// Never stay keyed when the page loses focus or is hidden.
window.addEventListener('blur', release);
document.addEventListener('visibilitychange', () => document.hidden && release());

function selectTx(name) {
  if (S.ptt.pressed) release();
  S.tx = name;
  $('#tx-name').textContent = S.channels.get(name)?.label || name || '—';
  $('#ptt').disabled = !name;
  $('#ptt').textContent = name ? `PTT · ${S.channels.get(name)?.label || name}` : 'PTT';
  for (const ch of S.channels.values()) $('.tx-select input', ch.el).checked = ch.name === name;
}

// ---------- channels, ports, stats ----------------------------------------------------------

function makeChannel(c, prev) {
  const el = $('#channel-tpl').content.firstElementChild.cloneNode(true);
  const ch = { name: c.name, label: c.label || c.name, holder: c.holder || null, id: undefined,
    el, audio: $('audio', el), tr: null, roster: [], listen: prev ? prev.listen : true,
    volume: prev ? prev.volume : 1, link: '' };
  el.dataset.channel = c.name;
  $('.ch-name', el).textContent = ch.label + (ch.label !== c.name ? ` (${c.name})` : '');
  $('.ch-level', el).setAttribute('aria-label', `${ch.label} level`);
  const tx = $('.tx-select input', el);
  tx.value = c.name;
  tx.setAttribute('aria-label', `Talk on ${ch.label}`);
  tx.addEventListener('change', () => tx.checked && selectTx(c.name));
  const listen = $('.listen input', el);
  listen.checked = ch.listen;
  listen.addEventListener('change', () => { ch.listen = listen.checked; applyListen(ch); });
  const vol = $('.volume input', el);
  vol.value = ch.volume;
  vol.setAttribute('aria-label', `${ch.label} volume`);
  vol.addEventListener('input', () => { ch.volume = Number(vol.value); applyListen(ch); });
  $('#channels').append(el);
  return ch;
}

function applyListen(ch) {
  ch.audio.muted = !ch.listen;
  ch.audio.volume = ch.volume;
}

function renderChannel(ch) {
  const h = ch.holder;
  const ours = h && h.id !== undefined && h.id === ch.id;
  ch.el.dataset.holder = h ? (ours ? 'self' : 'other') : '';
  // Holding the floor: heard by the other members, but on air only on radios that are keyed.
  const waiting = ours ? (ch.air || []).filter((r) => r.state === 'waiting').map((r) => r.port) : [];
  const self = waiting.length ? `you are talking (not on air on ${waiting.join(', ')} yet)` : 'you are talking';
  setText($('.ch-activity', ch.el), h ? (ours ? self : `▶ ${h.name} talking`) : 'idle');
  setText($('.ch-link', ch.el), ch.link);
  $('.tx-select input', ch.el).disabled = ch.id === undefined;
}

// ---------- emergencies ----------------------------------------------------------------------

function onEmergency(m) {
  if (m.active) {
    if (!S.emergencies.has(m.channel)) S.emergencies.set(m.channel, { source: m.source, kind: m.kind, shownAt: 0 });
  } else {
    S.emergencies.delete(m.channel);
  }
  renderEmergencies();
}

function renderEmergencies() {
  const list = $('#emergency-list');
  list.replaceChildren();
  for (const [channel, e] of S.emergencies) {
    const li = document.createElement('li');
    li.dataset.channel = channel;
    const text = document.createElement('span');
    const label = S.channels.get(channel)?.label || channel;
    text.textContent = `Emergency on ${label}: raised by ${e.source} (${e.kind})`;
    const ack = document.createElement('button');
    ack.type = 'button';
    ack.className = 'emergency-ack';
    ack.textContent = 'Acknowledge';
    ack.setAttribute('aria-label', `Acknowledge the emergency on ${label}`);
    ack.addEventListener('click', () => send({ type: 'emergency', channel, action: 'ack' }));
    li.append(text, ack);
    list.append(li);
    if (!e.shownAt) e.shownAt = performance.now();
  }
  $('#emergency-banner').hidden = S.emergencies.size === 0;
  for (const ch of S.channels.values()) ch.el.dataset.emergency = String(S.emergencies.has(ch.name));
  alertTone(S.emergencies.size > 0);
}

// Two tones, 960 and 1440 Hz, alternating every 250 ms, half a second on and half off.
function alertTone(on) {
  if (!on) {
    if (S.alert) { S.alert.stop(); S.alert = null; }
    return;
  }
  if (S.alert) return;
  try {
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    gain.gain.value = 0;
    osc.connect(gain).connect(ctx.destination);
    const t0 = ctx.currentTime + 0.02;
    for (let i = 0; i < 240; i++) { // two minutes scheduled; renewed below while it lasts
      const t = t0 + i * 0.5;
      osc.frequency.setValueAtTime(i % 2 ? 1440 : 960, t);
      gain.gain.setValueAtTime(i % 4 < 2 ? 0.25 : 0, t);
    }
    osc.start(t0);
    const renew = setTimeout(() => { if (S.alert) { S.alert.stop(); S.alert = null; alertTone(S.emergencies.size > 0); } }, 119000);
    S.alert = { ctx, stop: () => { clearTimeout(renew); try { osc.stop(); } catch (_) { /* not started */ } ctx.close(); } };
  } catch (err) {
    console.warn('alert tone', err);
  }
}

$('#emergency').addEventListener('click', () => {
  const ch = S.channels.get(S.tx);
  if (!ch) return;
  send({ type: 'emergency', channel: ch.name, action: 'raise', id: ch.id });
});

// ---------- the box's desk port (only when this console is served by a desk box) ----------

function deskAction(action) {
  if (!S.desk) return;
  S.deskPending = true;
  send({ type: 'desk', port: S.desk.port, action });
}

function renderDesk(d) {
  S.desk = d;
  $('#desk').hidden = false;
  setText($('#desk-port'), d.port);
  const body = $('#desk-channels tbody');
  const names = d.channels.map((c) => c.name).join(' ');
  if (body.dataset.names !== names) {
    body.dataset.names = names;
    body.replaceChildren(...d.channels.map((c) => deskRow(c.name)));
  }
  // Update in place: a control being used keeps its focus and value.
  for (const c of d.channels) {
    const tr = body.querySelector(`tr[data-channel="${c.name}"]`);
    tr.className = [c.tx && 'tx', c.busy && 'busy', c.rx && 'rx'].filter(Boolean).join(' ');
    $('.desk-select', tr).checked = c.name === d.selected;
    $('.desk-listen', tr).checked = c.listen;
    const range = $('.desk-volume', tr);
    if (document.activeElement !== range) range.value = c.volume_db;
    setText($('.desk-state', tr),
      [c.tx && 'desk talking', c.busy && 'busy', c.rx && 'receiving'].filter(Boolean).join(', ') || 'idle');
  }
  for (const id of ['#desk-patch-a', '#desk-patch-b']) {
    const s = $(id);
    const keep = s.value;
    s.replaceChildren(...d.channels.map((c) => new Option(c.name, c.name)));
    if (keep) s.value = keep;
  }
  $('#desk-patches').replaceChildren(...d.patches.map(([a, b]) => {
    const li = document.createElement('li');
    li.dataset.patch = `${a}+${b}`;
    const undo = Object.assign(document.createElement('button'), { type: 'button', textContent: 'Unpatch' });
    undo.onclick = () => deskAction({ action: 'patch', channels: [a, b], on: false });
    li.append(`${a} ⇄ ${b} `, undo);
    return li;
  }));
}

function deskRow(name) {
  const tr = document.createElement('tr');
  tr.dataset.channel = name;
  const cell = (...children) => { const td = document.createElement('td'); td.append(...children); return td; };
  const radio = Object.assign(document.createElement('input'), { type: 'radio', name: 'desk-selected',
    className: 'desk-select' });
  radio.setAttribute('aria-label', `select ${name}`);
  radio.onchange = () => deskAction({ action: 'select', channel: name });
  const box = Object.assign(document.createElement('input'), { type: 'checkbox', className: 'desk-listen' });
  box.setAttribute('aria-label', `listen to ${name}`);
  box.onchange = () => deskAction({ action: 'listen', channel: name, on: box.checked });
  const range = Object.assign(document.createElement('input'), { type: 'range', min: -60, max: 20, step: 1,
    className: 'desk-volume' });
  range.setAttribute('aria-label', `volume of ${name}`);
  range.onchange = () => deskAction({ action: 'volume', channel: name, db: Number(range.value) });
  const state = Object.assign(document.createElement('td'), { className: 'desk-state' });
  tr.append(cell(name), cell(radio), cell(box), cell(range), state);
  return tr;
}

function deskHold(button, on) {
  const b = $(button);
  const action = button === '#desk-ptt' ? 'ptt' : 'all_call';
  b.dataset.state = on ? 'on' : 'idle';
  deskAction({ action, on });
}

for (const id of ['#desk-ptt', '#desk-all-call']) {
  const b = $(id);
  b.addEventListener('pointerdown', (e) => { e.preventDefault(); deskHold(id, true); });
  for (const ev of ['pointerup', 'pointercancel', 'pointerleave']) {
    b.addEventListener(ev, () => { if (b.dataset.state === 'on') deskHold(id, false); });
  }
}
$('#desk-replay').addEventListener('click', () => deskAction({ action: 'replay_last' }));
$('#desk-patch').addEventListener('submit', (e) => {
  e.preventDefault();
  deskAction({ action: 'patch', channels: [$('#desk-patch-a').value, $('#desk-patch-b').value], on: true });
});

function renderPorts(ports) {
  const rows = ports.map((p) => {
    const tr = document.createElement('tr');
    const flags = [p.rx && 'RX active', p.tx && 'TX keyed', p.locked_out && 'locked out (TOT)',
      p.inhibited && 'inhibited'].filter(Boolean);
    for (const text of [p.name, p.channel, flags.join(', ') || 'idle']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    tr.className = [p.rx && 'rx', p.tx && 'tx', p.locked_out && 'locked', p.inhibited && 'inhibited']
      .filter(Boolean).join(' ');
    return tr;
  });
  $('#ports tbody').replaceChildren(...rows);
}

async function pollStats() {
  const pc = S.pc;
  if (!pc) return;
  let rtt = null;
  const stats = await pc.getStats();
  const byId = new Map([...stats.values()].map((r) => [r.id, r]));
  for (const r of stats.values()) {
    const pair = r.type === 'transport' && r.selectedCandidatePairId ? byId.get(r.selectedCandidatePairId)
      : r.type === 'candidate-pair' && (r.selected || r.nominated && r.state === 'succeeded') ? r
        : null; // Firefox has no transport stats: it marks the pair instead
    if (pair && pair.currentRoundTripTime !== undefined) rtt = pair.currentRoundTripTime;
  }
  for (const ch of S.channels.values()) {
    if (!ch.tr || pc !== S.pc) continue;
    let inb = null;
    (await ch.tr.receiver.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') inb = r; });
    const src = ch.tr.receiver.getSynchronizationSources?.()[0];
    const fresh = src && performance.timeOrigin + performance.now() - src.timestamp < 500;
    const level = inb?.audioLevel ?? (fresh ? src.audioLevel : 0) ?? 0;
    $('.ch-level', ch.el).value = ch.audio.muted ? 0 : level;
    ch.el.dataset.level = level.toFixed(3);
    ch.el.dataset.packets = inb?.packetsReceived ?? 0;
    if (inb) {
      const prev = S.prevStats.get(ch.name) || { lost: 0, recv: 0 };
      const dl = Math.max(0, inb.packetsLost - prev.lost), dr = inb.packetsReceived - prev.recv;
      S.prevStats.set(ch.name, { lost: inb.packetsLost, recv: inb.packetsReceived });
      const loss = dl + dr > 0 ? `${(100 * dl / (dl + dr)).toFixed(1)} %` : '–';
      ch.link = `rx ${inb.packetsReceived} pkts · loss ${loss} · jitter ${((inb.jitter || 0) * 1000).toFixed(0)} ms`;
    }
    renderChannel(ch);
  }
  setText($('#link'), pc.connectionState + (rtt !== null ? ` · RTT ${(rtt * 1000).toFixed(0)} ms` : ''));
  $('#link').dataset.state = pc.connectionState;
}

// ---------- history (recordings API, docs/recording.md) --------------------------------------
// The token goes only in the Authorization header (the API refuses it in a URL), so the audio
// is fetched and played from a Blob URL (the CSP allows media from blob:).

const H = { items: [], url: null, playing: null, loaded: false, refresh: null };

async function api(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${S.token}` } });
  if (!res.ok) {
    let why = res.statusText;
    try { why = (await res.json()).error || why; } catch { /* not JSON */ }
    const err = new Error(why);
    err.status = res.status;
    throw err;
  }
  return res;
}

function historyChannels() {
  const sel = $('#hist-channel');
  const keep = sel.value;
  const opts = [new Option('all', '')];
  for (const ch of S.channels.values()) opts.push(new Option(ch.label || ch.name, ch.name));
  sel.replaceChildren(...opts);
  sel.value = [...S.channels.keys()].includes(keep) ? keep : '';
}

async function loadHistory() {
  const q = new URLSearchParams();
  const channel = $('#hist-channel').value;
  const talker = $('#hist-talker').value.trim();
  if (channel) q.set('channel', channel);
  if (talker) q.set('talker', talker);
  // datetime-local is the browser's local time; Date parses it so.
  const from = $('#hist-from').value && new Date($('#hist-from').value).getTime();
  const to = $('#hist-to').value && new Date($('#hist-to').value).getTime();
  if (from) q.set('from_ms', String(from));
  if (to) q.set('to_ms', String(to));
  q.set('limit', '200');
  const status = $('#history-status');
  try {
    const res = await api('/api/recordings?' + q);
    H.items = (await res.json()).recordings || [];
    H.loaded = true;
    renderHistory();
    setText(status, H.items.length ? `${H.items.length} transmission${H.items.length === 1 ? '' : 's'}` : 'no transmissions');
  } catch (err) {
    if (err.status === 404) { $('#history').hidden = true; return; } // this box records nothing
    setText(status, `History: ${err.message}`);
  }
}

const fmtLength = (ms) => `${Math.floor(ms / 60000)}:${String(Math.floor(ms / 1000) % 60).padStart(2, '0')}.${Math.floor(ms % 1000 / 100)}`;

function renderHistory() {
  $('#history').hidden = false;
  const rows = H.items.map((m) => {
    const tr = document.createElement('tr');
    tr.dataset.id = m.id;
    if (H.playing === m.id) tr.dataset.playing = '';
    const start = new Date(m.start_unix_ms);
    const cells = [start.toLocaleString(), S.channels.get(m.channel)?.label || m.channel, m.talker, fmtLength(m.duration_ms)];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    tr.cells[0].title = m.start;
    tr.cells[3].title = `ended: ${m.end}${m.truncated ? ' (truncated)' : ''}`;
    const actions = document.createElement('td');
    const play = document.createElement('button');
    play.type = 'button';
    play.className = 'hist-play';
    play.textContent = 'Play';
    play.addEventListener('click', () => playRecording(m).catch((err) => setText($('#history-status'), `Play: ${err.message}`)));
    const save = document.createElement('button');
    save.type = 'button';
    save.className = 'hist-download';
    save.textContent = 'Download';
    save.addEventListener('click', () => downloadRecording(m).catch((err) => setText($('#history-status'), `Download: ${err.message}`)));
    actions.append(play, ' ', save);
    tr.append(actions);
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 5;
    td.textContent = 'none';
    tr.append(td);
    rows.push(tr);
  }
  $('#history-list tbody').replaceChildren(...rows);
}

async function recordingBlob(m) {
  return (await api('/api/recordings/' + encodeURIComponent(m.id))).blob();
}

async function playRecording(m) {
  const blob = await recordingBlob(m);
  const audio = $('#history-audio');
  if (H.url) URL.revokeObjectURL(H.url);
  H.url = URL.createObjectURL(new Blob([blob], { type: 'audio/ogg' }));
  H.playing = m.id;
  audio.hidden = false;
  audio.src = H.url;
  for (const tr of $('#history-list tbody').rows) tr.toggleAttribute('data-playing', tr.dataset.id === m.id);
  setText($('#history-status'), `playing ${m.talker} on ${m.channel}, ${new Date(m.start_unix_ms).toLocaleString()}`);
  await audio.play();
}

async function downloadRecording(m) {
  const blob = await recordingBlob(m);
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = m.file || `${m.id}.opus`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

$('#history-filter').addEventListener('submit', (e) => { e.preventDefault(); loadHistory(); });
$('#history-audio').addEventListener('ended', () => {
  H.playing = null;
  for (const tr of $('#history-list tbody').rows) tr.removeAttribute('data-playing');
});

function tick() {
  if (S.ptt.state === 'granted') {
    const s = Math.floor((Date.now() - S.ptt.since) / 1000);
    setText($('#talk-timer'), `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`);
  }
}

// Keepalive: ping every 10 s; a box silent for 25 s is gone (a dropped network may not close).
function keepalive() {
  if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return;
  if (Date.now() - S.lastRx > 25000) return reconnect('no answer from the box');
  send({ type: 'ping' });
}

// Browsers may refuse to play audio before the first user gesture: start it then.
function unblockAudio() {
  for (const ch of S.channels.values()) if (ch.audio.srcObject && ch.audio.paused) ch.audio.play().catch(() => {});
  if (/enable audio/.test($('#mic-status').textContent)) $('#mic-status').textContent = '';
}
document.addEventListener('pointerdown', unblockAudio);
document.addEventListener('keydown', unblockAudio);

setInterval(tick, 1000);
setInterval(keepalive, 10000);
setInterval(() => pollStats().catch(() => {}), 500);
start();
