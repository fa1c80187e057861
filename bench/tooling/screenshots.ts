// The README's pictures from a demo run: the top of the report, and the viewer on the run's model with an image
// picked, its strongest unit projected and an occlusion map made. Usage (after `npm run demo`):
//   node --import tsx bench/tooling/screenshots.ts [RUN=convscope-out] [OUT=docs]
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';
import { openDataset } from '../../src/data/dataset.js';
import { loadModel } from '../../src/model/load.js';
import { startServer } from '../../src/server/server.js';

const [run = 'convscope-out', out = 'docs'] = process.argv.slice(2);
const report = resolve(run, 'report', 'index.html');
const modelFile = join(run, 'train', 'model.safetensors');
for (const f of [report, modelFile]) if (!existsSync(f)) throw new Error(`${f} is missing: run npm run demo first`);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const server = await startServer({ model: loadModel(modelFile), data: await openDataset('shapes', { split: 'val' }), topkDir: join(run, 'topk') });
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 1040 } });
  await page.goto(`file://${report}`);
  await page.screenshot({ path: join(out, 'report.png') });

  await page.setViewportSize({ width: 1100, height: 1300 });
  await page.goto(server.url);
  await page.waitForSelector('body[data-ready="true"]');
  await page.selectOption('#layer', 'relu5');
  await page.fill('#feature', '35');
  await page.press('#feature', 'Tab');
  await page.waitForSelector('#topk-projections[data-loaded="9"]');
  await page.fill('#dataset-index', '0');
  await page.click('#pick');
  await page.waitForFunction(() => document.querySelectorAll('#predictions li').length === 5);
  await page.click('#strongest');
  await page.waitForSelector('#projection[data-unit]');
  await page.click('#occlude');
  await page.waitForFunction(() => (document.getElementById('occlusion-image') as HTMLImageElement).naturalWidth > 0, undefined, { timeout: 60_000 });
  await page.screenshot({ path: join(out, 'viewer.png') });
  process.stdout.write(`wrote ${join(out, 'report.png')} and ${join(out, 'viewer.png')}\n`);
} finally {
  await server.close();
  await browser.close();
}
