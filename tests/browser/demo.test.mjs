// The console against the real daemon: `roipd demo` (see demo-box.mjs), in Chromium.
// Screenshots go to target/screenshots/, a scratch folder, so a test run leaves the work tree as it
// was; ROIPD_SCREENSHOTS=docs/screenshots refreshes the README's pictures (=none: none at all).
import path from 'node:path';
import { DemoBox } from './demo-box.mjs';
import { freePort, REPO } from './harness.mjs';
import { consoleSuite } from './suite.mjs';

const shots = path.resolve(REPO, process.env.ROIPD_SCREENSHOTS ?? 'target/screenshots');

consoleSuite('demo', async ({ dir }) => new DemoBox({ dir, port: await freePort() }),
  { screenshots: process.env.ROIPD_SCREENSHOTS === 'none' ? null : shots, receivingRadio: true });
