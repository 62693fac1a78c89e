// The console against the real daemon: `roipd demo` (see demo-box.mjs), in Chromium.
// Screenshots go to docs/screenshots/ (ROIPD_SCREENSHOTS=<dir> elsewhere, =none for none).
import path from 'node:path';
import { DemoBox } from './demo-box.mjs';
import { freePort, REPO } from './harness.mjs';
import { consoleSuite } from './suite.mjs';

const shots = process.env.ROIPD_SCREENSHOTS ?? path.join(REPO, 'docs/screenshots');

consoleSuite('demo', async ({ dir }) => new DemoBox({ dir, port: await freePort() }),
  { screenshots: shots === 'none' ? null : shots, receivingRadio: true });
