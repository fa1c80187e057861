import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, test } from 'node:test';
import { decodeImage, type RgbImage } from '../src/data/image.js';
import { blueRed, colorAt, heatmap, overlay, viridis } from '../src/render/colormap.js';
import { encodePng, grid, hstack, projectionToImage, sideBySide, upscale, vstack, writePng } from '../src/render/figure.js';
import { legendSvg, plotSvg } from '../src/render/plot.js';
import { label, renderText, textBackend } from '../src/render/text.js';
import { markdownToHtml } from '../src/report/html.js';
import { ROOT } from './helpers.js';

/** Decided once per process: pango captions are only testable where fontconfig has a font. */
const fontsHere = (await textBackend()) === 'pango';

const dir = mkdtempSync(join(tmpdir(), 'convscope-render-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function solid(width: number, height: number, rgb: [number, number, number]): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(rgb, 3 * i);
  return { width, height, channels: 3, data };
}

function px(img: RgbImage, x: number, y: number): number[] {
  const o = (y * img.width + x) * img.channels;
  return [...img.data.subarray(o, o + img.channels)];
}

/** Pixels in rows [y0, y1) darker than mid-grey: ink of black text on white. */
function inkRows(img: RgbImage, y0: number, y1: number): number {
  let n = 0;
  for (let y = y0; y < y1; y++) for (let x = 0; x < img.width; x++) if (px(img, x, y)[0] < 128) n++;
  return n;
}

/** Where `needle` occurs exactly in `hay`, or undefined. */
function find(hay: RgbImage, needle: RgbImage): [number, number] | undefined {
  for (let y = 0; y + needle.height <= hay.height; y++) {
    outer: for (let x = 0; x + needle.width <= hay.width; x++) {
      for (let ny = 0; ny < needle.height; ny++) {
        for (let nx = 0; nx < needle.width; nx++) {
          const a = px(hay, x + nx, y + ny), b = px(needle, nx, ny);
          if (a[0] !== b[0] || a[1] !== b[1] || a[2] !== b[2]) continue outer;
        }
      }
      return [x, y];
    }
  }
  return undefined;
}

describe('projectionToImage', () => {
  test('max|v| -> 255 or 1, zero -> 128, sign and channel order kept', () => {
    // [1, 3, 1, 2]: channel-major in, interleaved out
    const t = { shape: [1, 3, 1, 2], data: new Float32Array([0, 2, -4, 1, 4, -2]) };
    const img = projectionToImage(t);
    assert.deepEqual([img.width, img.height, img.channels], [2, 1, 3]);
    // pixel 0 = (c0, c1, c2) = (0, -4, 4); pixel 1 = (2, 1, -2)
    assert.deepEqual(px(img, 0, 0), [128, 1, 255]);
    assert.deepEqual(px(img, 1, 0), [Math.round(128 + 63.5), Math.round(128 + 31.75), Math.round(128 - 63.5)]);
  });

  test('all zero is flat grey; one channel gives a grey image; [C,H,W] is accepted', () => {
    const z = projectionToImage({ shape: [3, 4, 4], data: new Float32Array(48) });
    assert.ok(z.data.every((v) => v === 128));
    const g = projectionToImage({ shape: [1, 1, 2, 2], data: new Float32Array([-1, 0, 0.5, 1]) });
    assert.equal(g.channels, 1);
    assert.deepEqual([...g.data], [1, 128, Math.round(128 + 63.5), 255]);
  });

  test('rejects a batch', () => {
    assert.throws(() => projectionToImage({ shape: [2, 3, 2, 2], data: new Float32Array(24) }), /projectionToImage needs/);
  });
});

describe('layout', () => {
  const colours: [number, number, number][] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]];
  const tiles = colours.map((c) => solid(4, 3, c));

  test('grid size, cell placement, gaps and empty cells', () => {
    const g = grid(tiles, 3, { gap: 2, background: 9 });
    assert.deepEqual([g.width, g.height, g.channels], [3 * 4 + 2 * 2, 2 * 3 + 2, 3]);
    assert.deepEqual(px(g, 0, 0), colours[0]);
    assert.deepEqual(px(g, 6, 0), colours[1]); // second column starts at 4 + 2
    assert.deepEqual(px(g, 4, 0), [9, 9, 9]); // gap
    assert.deepEqual(px(g, 6 + 3, 5 + 2), colours[4]); // row 1 starts at 3 + 2
    assert.deepEqual(px(g, 12, 5), [9, 9, 9]); // the sixth cell is empty
  });

  test('grid centres smaller images and keeps grey when everything is grey', () => {
    const big: RgbImage = { width: 5, height: 5, channels: 1, data: new Uint8Array(25).fill(200) };
    const dot: RgbImage = { width: 1, height: 1, channels: 1, data: new Uint8Array([7]) };
    const g = grid([big, dot], 2, { gap: 0, background: 0 });
    assert.equal(g.channels, 1);
    assert.deepEqual(px(g, 5 + 2, 2), [7]);
    assert.deepEqual(px(g, 5, 0), [0]);
  });

  test('hstack and vstack sizes and placement; grey parts join RGB', () => {
    const grey: RgbImage = { width: 2, height: 1, channels: 1, data: new Uint8Array([50, 60]) };
    const h = hstack([tiles[0], grey], { gap: 1, background: [1, 2, 3] });
    assert.deepEqual([h.width, h.height, h.channels], [4 + 1 + 2, 3, 3]);
    assert.deepEqual(px(h, 5, 1), [50, 50, 50]); // vertically centred
    assert.deepEqual(px(h, 5, 0), [1, 2, 3]);
    assert.deepEqual(px(h, 4, 1), [1, 2, 3]);
    const v = vstack([tiles[0], grey], { gap: 1 });
    assert.deepEqual([v.width, v.height], [4, 3 + 1 + 1]);
    assert.deepEqual(px(v, 1, 4), [50, 50, 50]); // horizontally centred
    assert.deepEqual(px(v, 3, 4), [255, 255, 255]);
  });

  test('upscale repeats each pixel factor x factor times', () => {
    const img: RgbImage = { width: 2, height: 2, channels: 1, data: new Uint8Array([1, 2, 3, 4]) };
    const u = upscale(img, 3);
    assert.deepEqual([u.width, u.height], [6, 6]);
    for (let y = 0; y < 6; y++) for (let x = 0; x < 6; x++) assert.equal(u.data[y * 6 + x], img.data[Math.floor(y / 3) * 2 + Math.floor(x / 3)]);
  });
});

describe('colour', () => {
  test('viridis heatmap spans its ends and gets lighter with value', () => {
    const values = new Float32Array([-3, 0, 3, 7]);
    const img = heatmap(values, 2, 2, viridis);
    assert.deepEqual(px(img, 0, 0), viridis.anchors[0]);
    assert.deepEqual(px(img, 1, 1), viridis.anchors[viridis.anchors.length - 1]);
    let last = -1;
    for (let i = 0; i <= 50; i++) {
      const [r, g, b] = colorAt(viridis, i / 50);
      const l = 0.2126 * r + 0.7152 * g + 0.0722 * b;
      assert.ok(l > last, `lightness falls at t=${i / 50}`);
      last = l;
    }
  });

  test('diverging heatmap puts zero at its centre colour and is symmetric in sign', () => {
    const img = heatmap(new Float32Array([-2, 0, 2, 1]), 1, 4, blueRed);
    const centre = blueRed.anchors[(blueRed.anchors.length - 1) / 2];
    assert.deepEqual(px(img, 1, 0), centre);
    assert.deepEqual(px(img, 0, 0), blueRed.anchors[0]);
    assert.deepEqual(px(img, 2, 0), blueRed.anchors[blueRed.anchors.length - 1]);
    assert.ok(px(img, 0, 0)[2] > px(img, 0, 0)[0], 'negative is blue');
    assert.ok(px(img, 3, 0)[0] > px(img, 3, 0)[2], 'positive is red');
  });

  test('overlay blends by alpha and checks sizes', () => {
    const base: RgbImage = { width: 1, height: 1, channels: 1, data: new Uint8Array([100]) };
    const heat = solid(1, 1, [200, 0, 50]);
    assert.deepEqual(px(overlay(base, heat, 0), 0, 0), [100, 100, 100]);
    assert.deepEqual(px(overlay(base, heat, 1), 0, 0), [200, 0, 50]);
    assert.deepEqual(px(overlay(base, heat, 0.5), 0, 0), [150, 50, 75]);
    assert.throws(() => overlay(base, solid(2, 1, [0, 0, 0]), 0.5), /resize one first/);
  });
});

describe('text', () => {
  test('auto picks pango exactly when a real font renders', async () => {
    const w = await renderText('W', { fontSize: 20, renderer: 'pango' }).catch(() => undefined);
    const dot = await renderText('.', { fontSize: 20, renderer: 'pango' }).catch(() => undefined);
    const realGlyphs = !!w && !!dot && w.width > dot.width && w.height > dot.height;
    assert.equal(await textBackend(), realGlyphs ? 'pango' : 'bitmap');
  });

  test('without fonts, captions fall back to the bitmap font with a warning', () => {
    const fc = join(dir, 'nofonts');
    mkdirSync(fc);
    writeFileSync(join(fc, 'fonts.conf'), `<?xml version="1.0"?><fontconfig><cachedir>${fc}</cachedir></fontconfig>`);
    const script =
      `const t = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'src/render/text.ts')).href)});` +
      `console.log(await t.textBackend());` +
      `const m = await t.renderText('OK', { fontSize: 12 }); console.log(m.width, m.height);`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: ROOT,
      env: { ...process.env, FONTCONFIG_FILE: join(fc, 'fonts.conf') },
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['bitmap', '11 7']); // two 5x7 glyphs and a 1 px space
    assert.match(r.stderr, /CONVSCOPE_NO_FONTS|no system font/);
  });

  for (const renderer of ['pango', 'bitmap'] as const) {
    const skip = renderer === 'pango' && !fontsHere ? 'no system fonts on this machine' : false;
    test(`label (${renderer}) adds a strip with ink below or above and keeps the image`, { skip }, async () => {
      const img = solid(120, 40, [200, 200, 200]);
      const below = await label(img, 'conv5 feature 19', { renderer, fontSize: 14 });
      assert.equal(below.width, 120);
      assert.ok(below.height > 40);
      assert.deepEqual(find(below, img), [0, 0]);
      assert.ok(inkRows(below, 40, below.height) > 20, 'no text drawn');
      const above = await label(img, 'conv5 feature 19', { renderer, fontSize: 14, position: 'top' });
      assert.deepEqual(find(above, img), [0, above.height - 40]);
      assert.ok(inkRows(above, 0, above.height - 40) > 20, 'no text drawn');
    });

    test(`label (${renderer}): different text draws differently; long text wraps or widens, never cuts`, { skip }, async () => {
      const img = solid(100, 10, [255, 255, 255]);
      const a = await label(img, 'IIII', { renderer });
      const b = await label(img, 'WWWW', { renderer });
      assert.ok(inkRows(b, 10, b.height) > inkRows(a, 10, a.height));
      const one = await label(img, 'short', { renderer });
      const long = await label(img, 'a much longer caption that cannot fit on one line of a narrow figure', { renderer });
      assert.ok(long.height > one.height || long.width > one.width);
    });
  }

  test('empty text adds nothing', async () => {
    const img = solid(3, 3, [1, 2, 3]);
    assert.deepEqual(await label(img, '  '), img);
  });
});

describe('figures and PNG', () => {
  test('sideBySide enlarges a 64 px pair to at least 256 px each, input left, legend drawn', async () => {
    const input = solid(64, 64, [250, 30, 30]);
    input.data.set([0, 0, 0], 0); // a marked corner, so the match below is positional
    const projection = projectionToImage({ shape: [1, 3, 64, 64], data: new Float32Array(3 * 64 * 64).map((_, i) => Math.sin(i)) });
    const fig = await sideBySide(input, projection, 'relu5 feature 19');
    const inPos = find(fig, upscale(input, 4));
    const projPos = find(fig, upscale(projection, 4));
    assert.ok(inPos && projPos, 'panels not found enlarged 4x');
    assert.ok(inPos[0] + 256 <= projPos[0], 'input is not left of the projection');
    assert.ok(inkRows(fig, inPos[1] + 256, fig.height) > 100, 'no legend under the panels');
  });

  test('writePng round-trips and writes nothing when encoding fails', async () => {
    const good = solid(5, 4, [10, 20, 30]);
    const p = join(dir, 'ok.png');
    await writePng(p, good);
    assert.deepEqual(await decodeImage(p), good);
    const q = join(dir, 'bad.png');
    const bad: RgbImage = { width: 5, height: 4, channels: 3, data: new Uint8Array(7) };
    await assert.rejects(writePng(q, bad), /has 7 bytes/);
    assert.equal(existsSync(q), false);
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('bad')), []);
  });

  test('encodePng keeps grey images one channel', async () => {
    const png = await encodePng({ width: 2, height: 2, channels: 1, data: new Uint8Array([0, 1, 2, 3]) });
    assert.equal(png[25], 0, 'PNG colour type is not greyscale');
  });
});

describe('plots and report text', () => {
  const legendBox = (svg: string) => {
    const m = /<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" fill="white" fill-opacity/.exec(svg);
    assert.ok(m, 'a legend box');
    return { x: Number(m[1]), y: Number(m[2]) };
  };
  const x = Array.from({ length: 10 }, (_, i) => i + 1);

  test('the legend goes to the corner no curve crosses: top right for falling curves, bottom right for rising accuracy', () => {
    const falling = plotSvg({ title: 'loss', xLabel: 'epoch', yLabel: 'loss', series: [{ name: 'train', x, y: x.map((e) => 2 / e) }] });
    const rising = plotSvg({ title: 'accuracy', xLabel: 'epoch', yLabel: 'accuracy', yRange: [0, 1], series: [
      { name: 'train', x, y: x.map((e) => 1 - 0.9 * Math.exp(-e / 2)) },
      { name: 'validation', x, y: x.map((e) => 0.95 - 0.85 * Math.exp(-e / 2)), dashed: true },
    ] });
    const [top, bottom] = [legendBox(falling), legendBox(rising)];
    assert.ok(top.x > 300 && top.y < 100, `falling: ${JSON.stringify(top)}`);
    assert.ok(bottom.x > 300 && bottom.y > 200, `rising: ${JSON.stringify(bottom)}`);
    assert.ok(rising.lastIndexOf('<polyline') < rising.indexOf('fill-opacity'), 'the legend is drawn over the curves');
  });

  test('a shared legend: plots drawn without their own, and one row that names each series in the colour its curve has', () => {
    const series = [
      { name: 'val/0', x, y: x.map((e) => e) },
      { name: 'val/1', x, y: x.map((e) => 2 * e) },
      { name: 'mean of 2', x, y: x.map((e) => 1.5 * e), color: '#000000', dashed: true },
    ];
    const plot = plotSvg({ title: 'distance', xLabel: 'shift', yLabel: 'd', series, legend: false });
    assert.ok(!plot.includes('fill-opacity'), 'no legend box in the plot');
    const strokes = (svg: string, tag: string) => [...svg.matchAll(new RegExp(`<${tag} [^>]*stroke="([^"]+)"`, 'g'))].map((m) => m[1]);
    const legend = legendSvg(series);
    assert.deepEqual(strokes(legend, 'line'), strokes(plot, 'polyline'));
    assert.deepEqual([...legend.matchAll(/<text [^>]*>([^<]*)</g)].map((m) => m[1]), ['val/0', 'val/1', 'mean of 2']);
    assert.equal(strokes(legend, 'line').length, 3);
    assert.ok(legend.includes('stroke-dasharray'), 'the mean is dashed in the legend too');
  });

  test('report Markdown: lines that follow each other are one paragraph; tables, lists and blank lines end it', () => {
    const html = markdownToHtml('| a | b |\n|---|---|\n| 1 | 2 |\n\nfirst line\nsecond line\n\nnext paragraph\n- one\n- two');
    assert.equal(html, '<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>\n<p>first line second line</p>\n<p>next paragraph</p>\n<ul><li>one</li><li>two</li></ul>');
  });
});
