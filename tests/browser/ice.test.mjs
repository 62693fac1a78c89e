// Issue 16, item 2 (reachability), run through in-netns.sh: the box (`roipd demo --tls
// --ice-tcp-listen …`) sits in the private namespace at 198.18.0.1; each console is a Chromium
// in a namespace of its own that this test makes (`ip netns add`), at a non-loopback address.
//
// 1. Console at 198.18.0.2: first with UDP (the reference connect time), then with all its
//    UDP dropped by nft: it connects over ICE-TCP (passive TCP candidate, RFC 4571), holding
//    PTT keys the simulated radio and its tone is transmitted; release unkeys it.
// 2. Console at 10.99.0.2 behind a NAT namespace (nft masquerade) that drops every UDP packet
//    but TURN's and the TCP to the ICE-TCP port: it connects through coturn (started here,
//    `use-auth-secret`) with the time-limited credentials the hub put in `welcome`.
//
// Nothing leaves the namespaces this test makes; they are deleted at the end.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { DemoBox } from './demo-box.mjs';
import { CHROMIUM, HOST, freePort, launch, prerequisites, sleep, tmpDir, toneWav, until } from './harness.mjs';

const dir = tmpDir('roipd-ice-');
const CLIENT_NS = `roipd-ice-c${process.pid}`;
const NAT_NS = `roipd-ice-r${process.pid}`;
const NATTED_NS = `roipd-ice-n${process.pid}`;
const TURN_IP = '198.18.2.1';
const TURN_SECRET = 'coturn-shared-secret-for-the-test';
let chromium, box, turnBox, tcpPort, turn, wav;
const browsers = [];

const connState = (p) => p.locator('#conn').getAttribute('data-state');
const floorState = (p) => p.locator('#floor-status').getAttribute('data-state');

function run(cmd, ...args) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.toString() || e.message}`);
  }
}

/** Fail (never skip) naming the Debian package when a tool is missing. */
function need(bin, pkg) {
  const found = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => fs.existsSync(path.join(d, bin)));
  if (!found) throw new Error(`${bin} not found: install Debian package ${pkg} (scripts/setup-debian --test)`);
}

const nft = (ns, rules) => {
  const file = path.join(dir, `${ns}.nft`);
  fs.writeFileSync(file, rules);
  run('ip', 'netns', 'exec', ns, 'nft', '-f', file);
};

/** A Chromium whose every process runs in namespace `ns` (a wrapper as its executable). */
async function browserIn(ns, box) {
  const wrapper = path.join(dir, `chromium-${ns}`);
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  const b = await launch(chromium, wav, [`--ignore-certificate-errors-spki-list=${box.spkiHash()}`], wrapper);
  browsers.push(b);
  return b;
}

/** Open the console; ms until joined with ICE up, and the selected pair's local candidate. */
async function open(b, box) {
  const ctx = await b.newContext({ viewport: { width: 420, height: 860 } });
  const p = await ctx.newPage();
  p.on('pageerror', (err) => console.error(`[page error] ${err.message}`));
  const t0 = Date.now();
  await p.goto(`${box.url}/#token=${encodeURIComponent(box.token)}`);
  await until('the console to join and ICE to connect', async () => (await connState(p)) === 'up', 30000);
  const ms = Date.now() - t0;
  const pair = await p.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const stats = await S.pc.getStats();
    let selected;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) selected = stats.get(s.selectedCandidatePairId); });
    const local = selected && stats.get(selected.localCandidateId);
    const remote = selected && stats.get(selected.remoteCandidateId);
    return local && { protocol: local.protocol, type: local.candidateType, remote: `${remote.address}:${remote.port}`, remoteProtocol: remote.protocol };
  });
  return { p, ms, pair };
}

/** Hold PTT for 2 s: the radio keys, its TX carries the tone; release unkeys it. */
async function talk(p, box, what) {
  const toneBefore = await box.txTone();
  const b = await p.locator('#ptt').boundingBox();
  await p.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  await p.mouse.down();
  try {
    await until(`TRANSMITTING (${what})`, async () => (await floorState(p)) === 'granted', 5000);
    await until(`the radio PTT line keyed (${what})`, () => box.pttLine(), 5000);
    await sleep(2000);
    assert.equal(box.pttLine(), true, 'PTT line held while the button is held');
  } finally {
    await p.mouse.up();
  }
  await until(`idle after release (${what})`, async () => (await floorState(p)) === 'idle', 3000);
  await until(`the radio PTT line released (${what})`, async () => !box.pttLine(), 10000);
  const tone = await until(`the 1 kHz tone at the radio output (${what})`, async () => {
    const t = (await box.txTone()) - toneBefore;
    return t >= 1.0 && t;
  }, 5000);
  console.log(`  ${tone.toFixed(2)} s of 1 kHz tone transmitted (${what})`);
}

before(async () => {
  if (process.env.ROIPD_IN_NETNS !== '1') throw new Error('ice.test.mjs runs through in-netns.sh (root, a private namespace)');
  chromium = await prerequisites();
  need('nft', 'nftables');
  need('ip', 'iproute2');
  need('turnserver', 'coturn');
  wav = toneWav(path.join(dir, 'mic-1khz.wav'), { freq: 1000, seconds: 4 });

  // Console 1's namespace takes the far end of in-netns.sh's veth (v1).
  run('ip', 'netns', 'add', CLIENT_NS);
  run('ip', 'link', 'set', 'v1', 'netns', CLIENT_NS);
  run('ip', '-n', CLIENT_NS, 'addr', 'add', '198.18.0.2/24', 'dev', 'v1');
  run('ip', '-n', CLIENT_NS, 'link', 'set', 'lo', 'up');
  run('ip', '-n', CLIENT_NS, 'link', 'set', 'v1', 'up');

  // Console 2: NATTED_NS (10.99.0.2) -> NAT_NS (10.99.0.1 | 198.18.2.2, masquerade) -> here (198.18.2.1).
  run('ip', 'netns', 'add', NAT_NS);
  run('ip', 'netns', 'add', NATTED_NS);
  run('ip', 'link', 'add', 'v2', 'type', 'veth', 'peer', 'name', 'v3');
  run('ip', 'link', 'set', 'v3', 'netns', NAT_NS);
  run('ip', 'addr', 'add', `${TURN_IP}/24`, 'dev', 'v2');
  run('ip', 'link', 'set', 'v2', 'up');
  run('ip', '-n', NAT_NS, 'link', 'add', 'v4', 'type', 'veth', 'peer', 'name', 'v5');
  run('ip', '-n', NAT_NS, 'link', 'set', 'v5', 'netns', NATTED_NS);
  run('ip', '-n', NAT_NS, 'addr', 'add', '198.18.2.2/24', 'dev', 'v3');
  run('ip', '-n', NAT_NS, 'addr', 'add', '10.99.0.1/24', 'dev', 'v4');
  for (const l of ['lo', 'v3', 'v4']) run('ip', '-n', NAT_NS, 'link', 'set', l, 'up');
  run('ip', 'netns', 'exec', NAT_NS, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  run('ip', '-n', NAT_NS, 'route', 'add', '198.18.0.0/24', 'via', TURN_IP);
  run('ip', '-n', NATTED_NS, 'addr', 'add', '10.99.0.2/24', 'dev', 'v5');
  for (const l of ['lo', 'v5']) run('ip', '-n', NATTED_NS, 'link', 'set', l, 'up');
  run('ip', '-n', NATTED_NS, 'route', 'add', 'default', 'via', '10.99.0.1');

  // Two boxes: one with ICE-TCP, one giving consoles the TURN server (so the first one's
  // connect times are not held up by gathering from an unreachable TURN server).
  tcpPort = await freePort();
  const turnBoxTcpPort = await freePort();
  for (const d of ['box', 'turn-box']) fs.mkdirSync(path.join(dir, d));
  const secretFile = path.join(dir, 'turn-secret');
  fs.writeFileSync(secretFile, TURN_SECRET, { mode: 0o600 });
  box = new DemoBox({
    dir: path.join(dir, 'box'), port: await freePort(), tls: true, trafficEvery: 0,
    extra: ['--ice-tcp-listen', `${HOST}:${tcpPort}`],
  });
  await box.start();
  turnBox = new DemoBox({
    dir: path.join(dir, 'turn-box'), port: await freePort(), tls: true, trafficEvery: 0,
    extra: ['--ice-tcp-listen', `${HOST}:${turnBoxTcpPort}`, '--ice-server', `turn:${TURN_IP}:3478?transport=udp`,
      '--turn-secret-file', secretFile],
  });
  await turnBox.start();
  // Only TURN's UDP and the hub's HTTPS leave the NAT: media to the hub over UDP and ICE-TCP
  // are dropped, so a relay candidate is the one way in.
  nft(NAT_NS, `table inet roipd {
  chain through {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    ip daddr ${TURN_IP} udp dport 3478 accept
    meta l4proto udp drop
    tcp dport { ${tcpPort}, ${turnBoxTcpPort} } drop
  }
}
table ip roipd_nat {
  chain post {
    type nat hook postrouting priority 100;
    oifname "v3" masquerade
  }
}
`);
});

after(async () => {
  for (const b of browsers) await b.close().catch(() => {});
  if (turn && turn.exitCode === null) {
    turn.kill('SIGTERM');
    await Promise.race([new Promise((r) => turn.once('exit', r)), sleep(3000)]);
  }
  await box?.stop().catch((e) => console.error('stopping the box:', e));
  await turnBox?.stop().catch((e) => console.error('stopping the TURN box:', e));
  for (const ns of [CLIENT_NS, NATTED_NS, NAT_NS]) {
    try { run('ip', 'netns', 'del', ns); } catch (e) { console.error(e.message); }
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

test('ice-tcp: a console whose UDP is dropped connects over ICE-TCP and talks', async () => {
  const b = await browserIn(CLIENT_NS, box);
  // The reference: the same console with UDP, three times.
  const udpMs = [];
  for (let i = 0; i < 3; i++) {
    const udp = await open(b, box);
    assert.equal(udp.pair?.protocol, 'udp', `over UDP first: ${JSON.stringify(udp.pair)}`);
    udpMs.push(udp.ms);
    await udp.p.context().close();
  }

  nft(CLIENT_NS, 'table inet roipd {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    meta l4proto udp drop\n  }\n}\n');
  const tcpMs = [];
  let tcp;
  for (let i = 0; i < 3; i++) {
    if (tcp) await tcp.p.context().close();
    tcp = await open(b, box);
    assert.equal(tcp.pair?.protocol, 'tcp', `selected pair over TCP: ${JSON.stringify(tcp.pair)}`);
    assert.equal(tcp.pair.remote, `${HOST}:${tcpPort}`, 'to the hub\'s passive TCP candidate');
    tcpMs.push(tcp.ms);
  }
  const ratio = median(tcpMs) / median(udpMs);
  console.log(`  console joined with ICE up (page load to connected): HTTPS+UDP ${udpMs.join(', ')} ms, ` +
    `HTTPS+ICE-TCP ${tcpMs.join(', ')} ms: medians ${(ratio).toFixed(2)}x`);
  assert.ok(ratio <= 1.5, `ICE-TCP connect within 1.5x of UDP (${ratio.toFixed(2)}x)`);
  await talk(tcp.p, box, 'ICE-TCP');
  await tcp.p.context().close();
});

test('turn: a console behind NAT with UDP to the hub dropped connects through coturn', async () => {
  const conf = path.join(dir, 'turnserver.conf');
  fs.writeFileSync(conf, [
    `listening-ip=${TURN_IP}`, `relay-ip=${TURN_IP}`, 'listening-port=3478', 'min-port=49152', 'max-port=49252',
    'use-auth-secret', `static-auth-secret=${TURN_SECRET}`, 'realm=roipd.test', 'fingerprint',
    'no-tls', 'no-dtls', 'no-cli', 'no-rfc5780', 'no-stun-backward-compatibility',
    `log-file=${path.join(dir, 'turn.log')}`, 'simple-log', `pidfile=${path.join(dir, 'turn.pid')}`, '',
  ].join('\n'));
  turn = spawn('turnserver', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let turnErr = '';
  turn.stderr.on('data', (d) => { turnErr += d; });
  await until('coturn listening', () => run('ss', '-Hlun', `sport = 3478`).includes(TURN_IP), 5000)
    .catch((e) => { throw new Error(`${e.message}\n${turnErr}`); });

  const b = await browserIn(NATTED_NS, turnBox);
  const relayed = await open(b, turnBox);
  assert.equal(relayed.pair?.type, 'relay', `selected pair through the TURN relay: ${JSON.stringify(relayed.pair)}`);
  console.log(`  console behind NAT joined through coturn in ${relayed.ms} ms`);
  // eslint-disable-next-line no-undef
  const servers = await relayed.p.evaluate(() => S.iceServers);
  assert.match(servers[0].username, /^\d+:demo$/, 'the hub\'s time-limited username (expiry:token name)');
  const expiry = Number(servers[0].username.split(':')[0]);
  assert.ok(Math.abs(expiry - (Date.now() / 1000 + 86400)) < 60, `expires in a day: ${expiry}`);
  await talk(relayed.p, turnBox, 'TURN relay');
  await relayed.p.context().close();
});
