// The viewer in real headless Chromium (Debian's, driven by playwright-core): load the page, pick a feature, see
// its top 9, upload an image, click a unit on the activation map and check that its projection appears and is not
// blank; run an occlusion map, an attribution from the method menu and a synthetic image of the feature. A screenshot
// of the final page is kept for a person to look at.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { topClasses } from '../src/analysis/class-target.js';
import { openDataset } from '../src/data/dataset.js';
import { loadInput } from '../src/data/image.js';
import { Engine } from '../src/engine/engine.js';
import { Landmarks } from '../src/model/landmarks.js';
import type { Model } from '../src/model/layers.js';
import { loadModel } from '../src/model/load.js';
import { readSafetensorsModel } from '../src/model/safetensors.js';
import { inferShapes } from '../src/model/shapes.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import type { Tensor } from '../src/tensor.js';
import { fixture, ROOT } from './helpers.js';

const CHROMIUM = process.env.CONVSCOPE_CHROMIUM ?? '/usr/bin/chromium';
export const SCREENSHOT = join(tmpdir(), 'convscope-viewer.png');

/** Pixel statistics of a loaded <img>, read back through a canvas in the page. */
async function imageStats(page: Page, selector: string): Promise<{ width: number; height: number; distinct: number; nonGrey: number }> {
  return page.$eval(selector, (el) => {
    const img = el as HTMLImageElement;
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d')!;
    ctx.drawImage(img, 0, 0);
    const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const values = new Set<number>();
    let nonGrey = 0;
    for (let i = 0; i < data.length; i += 4) {
      values.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      // 128 is a projection's zero: a projection of all zeros would be uniformly this grey.
      if (data[i] !== 128 || data[i + 1] !== 128 || data[i + 2] !== 128) nonGrey++;
    }
    return { width: canvas.width, height: canvas.height, distinct: values.size, nonGrey };
  });
}

/** The zoo's chain model (its fixture weights), and a residual network as a stock torch export. */
const MODELS: { label: string; load: () => Model; layer: (m: Model) => string; screenshot: string }[] = [
  { label: 'zfnet-small', load: () => readSafetensorsModel(fixture('weights.safetensors')), layer: () => 'relu2', screenshot: SCREENSHOT },
  {
    label: 'resnet_small (ONNX graph)',
    load: () => loadModel(join(ROOT, '..', 'shared', 'fixtures', 'graph', 'resnet_small', 'model.onnx')),
    // The last rectified map of layer2's resolution (8x8), whatever the importer names it.
    layer: (m) => new Landmarks(m).levels()[2],
    screenshot: join(tmpdir(), 'convscope-viewer-graph.png'),
  },
];

for (const spec of MODELS) describe(`viewer in headless Chromium: ${spec.label}`, { timeout: 120_000 }, () => {
  let server: RunningServer;
  let browser: Browser;
  let page: Page;
  let model: Model;
  let layer: string;
  const problems: string[] = [];

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: install Debian's chromium (.ci/run does) or set CONVSCOPE_CHROMIUM`);
    model = spec.load();
    layer = spec.layer(model);
    const data = await openDataset('shapes:count=24', { split: 'val' });
    server = await startServer({ model, data, scanLimit: 24 });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 1100, height: 820 } });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    // The viewer must work offline: any request that leaves the server is a fault (blob: URLs are the page's own).
    page.on('request', (r) => {
      if (/^(https?|wss?):/.test(r.url()) && !r.url().startsWith(server.url)) problems.push(`request off the server: ${r.url()}`);
    });
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  it('loads the page, shows a feature\'s top 9, projects a clicked unit, maps occlusion', async () => {
    try {
      await viewerSession();
    } catch (e) {
      // The page's own account of what went wrong, and a picture of it, make a CI failure readable.
      await page.screenshot({ path: spec.screenshot, fullPage: true }).catch(() => undefined);
      const status = await page.textContent('#status').catch(() => '?');
      throw new Error(`${(e as Error).message.replace(/\s*\n\s*/g, ' ')}; page status: '${status}'; ${problems.join('; ') || 'no page errors'}; screenshot ${spec.screenshot}`);
    }
  });

  async function viewerSession(): Promise<void> {
    await page.goto(server.url);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
    assert.match(await page.textContent('#model-name') ?? '', /3x64x64/);

    // Pick a feature: feature 5 of an 8x8 map, so that a click lands on a known unit.
    assert.deepEqual(inferShapes(model).find((i) => i.layer.name === layer)?.outShape.slice(1), [8, 8]);
    await page.selectOption('#layer', layer);
    await page.fill('#feature', '5');
    await page.press('#feature', 'Tab');
    await page.waitForSelector('#topk-projections[data-loaded="9"]', { timeout: 30_000 });
    assert.equal(await page.locator('#topk-projections img').count(), 9);
    assert.equal(await page.locator('#topk-patches img').count(), 9);
    const best = await imageStats(page, '#topk-projections img:first-child');
    assert.ok(best.distinct > 1, 'the best top-9 projection is blank');

    // Before an image is chosen, its panel shows nothing (no empty frames, no broken-image icons).
    assert.ok(await page.isHidden('#views'), 'the image views wait for an image');
    assert.ok(await page.isHidden('#ranked') && await page.isHidden('#maps'));

    // Upload an image through the file input, as a person would.
    await page.setInputFiles('#upload', fixture('input.png'));
    await page.waitForFunction((l) => {
      const img = document.getElementById('activation-map') as HTMLImageElement;
      return img.src.includes(`/activation.png?layer=${encodeURIComponent(l)}&feature=5`) && img.complete && img.naturalWidth === 8;
    }, layer, { timeout: 30_000 });

    // Click the unit at row 3, column 6 of the 8x8 map, drawn at 256 px: 32 px a unit.
    const box = (await page.locator('#activation-map').boundingBox())!;
    assert.deepEqual([box.width, box.height], [256, 256]);
    await page.locator('#activation-map').click({ position: { x: 6.5 * 32, y: 3.5 * 32 } });
    await page.waitForSelector(`#projection[data-unit="${layer}/5/3/6/deconvnet"]`, { timeout: 30_000 });
    const projection = await imageStats(page, '#projection');
    assert.deepEqual([projection.width, projection.height], [64, 64]);
    assert.ok(projection.distinct > 1 && projection.nonGrey > 0, `projection is blank: ${JSON.stringify(projection)}`);
    assert.match(await page.textContent('#projection-caption') ?? '', new RegExp(`${layer.replace(/[.]/g, '\\.')} feature 5 at \\(3,6\\)`));
    const marker = await page.$eval('#unit-marker', (el) => [(el as HTMLElement).hidden, (el as HTMLElement).style.top, (el as HTMLElement).style.left]);
    assert.deepEqual(marker, [false, '96px', '192px'], 'the clicked cell is outlined');

    // Another rule re-projects the same unit.
    await page.selectOption('#rule', 'guided');
    await page.waitForSelector(`#projection[data-unit="${layer}/5/3/6/guided"]`, { timeout: 30_000 });
    await page.selectOption('#rule', 'deconvnet');
    await page.waitForSelector(`#projection[data-unit="${layer}/5/3/6/deconvnet"]`, { timeout: 30_000 });

    // The top classes beside the image, as the engine computes them.
    const input = await loadInput(fixture('input.png'), model);
    const engine = new Engine(model);
    let act: Tensor;
    let expected: { class: number; probability: number }[];
    try {
      expected = await topClasses(engine, input, 5);
      act = (await engine.forward(input, [layer])).activations.get(layer)!;
    } finally {
      await engine.dispose();
    }
    await page.waitForFunction(() => document.querySelectorAll('#predictions li').length === 5, undefined, { timeout: 30_000 });
    assert.deepEqual(await page.$$eval('#predictions li', (els) => els.map((e) => e.textContent)), expected.map((c) => `class ${c.class} ${(100 * c.probability).toFixed(1)}%`));

    // The colour bar spans the map's own range; the features are ranked for this image, the strongest first.
    const [C, H, W] = act.shape.slice(1);
    const map5 = act.data.subarray(5 * H * W, 6 * H * W);
    assert.deepEqual([await page.textContent('#scale-min'), await page.textContent('#scale-max')], [Math.min(...map5).toPrecision(3), Math.max(...map5).toPrecision(3)]);
    const maxOf = (f: number) => Math.max(...act.data.subarray(f * H * W, (f + 1) * H * W));
    const strongest = Array.from({ length: C }, (_, f) => f).sort((a, b) => maxOf(b) - maxOf(a) || a - b);
    assert.deepEqual(await page.$$eval('#ranked-list button', (els) => els.map((e) => Number((e as HTMLElement).dataset.feature))), strongest.slice(0, Math.min(12, C)));

    // A silent unit says so instead of showing a flat projection.
    const zero = map5.findIndex((v) => v === 0);
    assert.ok(zero >= 0, 'feature 5 has a silent unit on this image');
    await page.locator('#activation-map').click({ position: { x: ((zero % W) + 0.5) * 32, y: (Math.floor(zero / W) + 0.5) * 32 } });
    await page.waitForSelector(`#projection[data-unit="${layer}/5/${Math.floor(zero / W)}/${zero % W}/deconvnet"]`, { state: 'attached', timeout: 30_000 });
    assert.ok(await page.isHidden('#projection') && await page.isVisible('#silent-note'));
    assert.match(await page.textContent('#silent-note') ?? '', /is silent at .* nothing to project/);

    // "Strongest unit" projects the map's maximum; a ranked feature and a tile of the all-maps grid select a feature.
    const at = map5.indexOf(Math.max(...map5));
    await page.click('#strongest');
    await page.waitForSelector(`#projection[data-unit="${layer}/5/${Math.floor(at / W)}/${at % W}/deconvnet"]`, { timeout: 30_000 });
    assert.ok(await page.isVisible('#projection') && await page.isHidden('#silent-note'));
    await page.click(`#ranked-list button[data-feature="${strongest[1]}"]`);
    await page.waitForFunction((f) => (document.getElementById('feature') as HTMLInputElement).value === String(f), strongest[1]);
    await page.click('#show-maps');
    await page.waitForSelector(`#maps-grid[data-loaded="${C}"]`, { timeout: 60_000 });
    assert.equal(await page.locator('#maps-grid figure').count(), C);
    assert.equal(await page.textContent('#maps-grid figure:nth-child(8) figcaption'), '7');
    await page.click('#maps-grid figure:nth-child(8)');
    await page.waitForFunction(() => (document.getElementById('feature') as HTMLInputElement).value === '7');
    await page.waitForSelector('#maps-grid figure.current[data-feature="7"]', { timeout: 30_000 });
    await page.fill('#feature', '5');
    await page.press('#feature', 'Tab');
    await page.waitForSelector('#maps-grid figure.current[data-feature="5"]', { timeout: 30_000 });

    // Occlusion of a chosen class with a chosen square: the button runs a job; the page polls it and shows the map.
    await page.fill('#target', '3');
    await page.fill('#window', '16');
    await page.fill('#stride', '8');
    await page.click('#occlude');
    await page.waitForSelector('#occlusion-figure:not([hidden])', { timeout: 30_000 });
    await page.waitForFunction(() => (document.getElementById('occlusion-image') as HTMLImageElement).naturalWidth === 64, undefined, { timeout: 30_000 });
    assert.equal(await page.$eval('#occlusion-progress', (el) => (el as HTMLProgressElement).value), 1);
    assert.match(await page.textContent('#occlusion-caption') ?? '', /^p\(class 3\) with a 16 px grey square centred there \(7x7 positions\)/);
    await page.fill('#target', '');

    // An attribution from the method menu: Integrated Gradients of the predicted class, with its colour bar.
    await page.selectOption('#method', 'ig');
    await page.click('#attribute');
    await page.waitForSelector('#attribution-image[data-method="ig"]', { timeout: 30_000 });
    const attribution = await imageStats(page, '#attribution-image');
    assert.ok(attribution.width > 128 && attribution.distinct > 50, `attribution panel: ${JSON.stringify(attribution)}`);
    assert.match(await page.textContent('#attribution-caption') ?? '', /^ig of .+ \(predicted .+\), delta -?\d/);

    // The feature's synthetic image, made on request (the server has no --topk folder).
    await page.click('#show-synthetic');
    await page.waitForSelector(`#synthetic-image[data-feature="${layer}/5"]`, { timeout: 60_000 });
    const synthetic = await imageStats(page, '#synthetic-image');
    assert.deepEqual([synthetic.width, synthetic.height], [64, 64]);
    assert.ok(synthetic.distinct > 100, 'the synthetic image is not flat');
    assert.match(await page.textContent('#synthetic-caption') ?? '', /made now/);

    await page.screenshot({ path: spec.screenshot, fullPage: true });
    process.stdout.write(`viewer screenshot: ${spec.screenshot}\n`);
    assert.deepEqual(problems, []);
    assert.equal(await page.textContent('#status'), '', 'no error shown in the status line');
  }
});
