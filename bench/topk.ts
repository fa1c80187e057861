// Top-k sweep benchmark (Fig. 2): images/s of the streaming top-k scan against forward-only passes over the same
// data in the same run, and the scan's peak RSS for N and 10 N images.
//
//   npm run bench:topk -- [--model zfnet-small] [--images 1000] [--repeats 3] [--batch 64] [--per-image 1]
//                         [--layers relu1,...] [--rss-scale 10] [--no-rss] [--record]
//
// Each repeat runs, in turn: forward-only to the last layer (plain inference over the data), forward-only returning
// the scanned layers' maps (engine.forward, results dropped: what a top-k in JS would start from), and the top-k scan
// (one forward pass with an in-graph TopK per layer, then the heaps). Two data paths: shapes rendered per item as a
// user's run does, and the same images decoded once into memory, so that the comparison is not hidden behind the
// data loader. Peak RSS is VmHWM of a child process that makes one pass (the scan, or forward-only for reference).
// --record appends the tables to bench/RESULTS.md.
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { availableParallelism, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveTopkLayers, scanTopk } from '../src/analysis/topk.js';
import { batches } from '../src/data/batches.js';
import { openDataset, type Dataset, type Item } from '../src/data/dataset.js';
import { Engine } from '../src/engine/engine.js';
import { loadModel } from '../src/model/load.js';
import { median } from '../src/tensor.js';
import { intArg } from './common.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

interface Args {
  model: string;
  images: number;
  repeats: number;
  batch: number;
  perImage: number;
  layers: string[] | undefined;
  rssScale: number;
  rss: boolean;
  record: boolean;
  /** Internal: run one measured pass (the scan, or forward-only to the last layer) and print its peak RSS. */
  child: 'scan' | 'forward' | undefined;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { model: 'zfnet-small', images: 1000, repeats: 3, batch: 64, perImage: 1, layers: undefined, rssScale: 10, rss: true, record: false, child: undefined };
  const int = intArg;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i];
    switch (a) {
      case '--model': args.model = value() ?? ''; break;
      case '--images': args.images = int(a, value(), 1); break;
      case '--repeats': args.repeats = int(a, value(), 1); break;
      case '--batch': args.batch = int(a, value(), 1); break;
      case '--per-image': args.perImage = int(a, value(), 1); break;
      case '--layers': args.layers = (value() ?? '').split(',').filter((s) => s.length > 0); break;
      case '--rss-scale': args.rssScale = int(a, value(), 2); break;
      case '--no-rss': args.rss = false; break;
      case '--record': args.record = true; break;
      case '--child': {
        const c = value();
        if (c !== 'scan' && c !== 'forward') throw new Error(`--child is scan or forward, got ${c ?? 'nothing'}`);
        args.child = c;
        break;
      }
      case '-h':
      case '--help':
        console.log('usage: npm run bench:topk -- [--model zfnet-small] [--images 1000] [--repeats 3] [--batch 64] [--per-image 1] [--layers relu1,...] [--rss-scale 10] [--no-rss] [--record]');
        process.exit(0);
      // falls through (exit)
      default:
        throw new Error(`unknown option ${a}; see --help`);
    }
  }
  return args;
}

/** The shapes validation set with `n` items; the model decides the image size. */
function shapesFor(engine: Engine, n: number): Promise<Dataset> {
  return openDataset(`shapes:size=${engine.model.input[1]},count=${n}`, { split: 'val' });
}

/** The same items rendered once and served from memory. */
async function inMemory(ds: Dataset): Promise<Dataset> {
  const items: Item[] = [];
  for (let i = 0; i < ds.size; i++) items.push(await ds.item(i));
  return { ...ds, name: `${ds.name} in memory`, item: async (i) => items[i] };
}

async function forwardOnly(engine: Engine, ds: Dataset, layers: string[], batchSize: number): Promise<void> {
  const m = engine.model;
  for await (const b of batches(ds, { input: m.input, preprocess: m.preprocess, batchSize })) await engine.forward(b.input, layers);
}


async function seconds(f: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await f();
  return (performance.now() - t0) / 1000;
}

interface Row { data: string; fwdLast: number[]; fwdLayers: number[]; scan: number[] }

async function throughput(engine: Engine, args: Args, layers: string[]): Promise<Row[]> {
  const last = engine.model.layers[engine.model.layers.length - 1].name;
  const rendered = await shapesFor(engine, args.images);
  const memory = await inMemory(rendered);
  const rows: Row[] = [];
  for (const [label, ds] of [['shapes rendered per item', rendered], ['same images in memory', memory]] as const) {
    const row: Row = { data: label, fwdLast: [], fwdLayers: [], scan: [] };
    // Warm-up: session creation for each graph, and the first touches of fresh memory.
    await forwardOnly(engine, ds, [last], args.batch);
    await forwardOnly(engine, ds, layers, args.batch);
    await scanTopk(engine, ds, { layers, batchSize: args.batch, perImage: args.perImage });
    for (let r = 0; r < args.repeats; r++) {
      row.fwdLast.push(await seconds(() => forwardOnly(engine, ds, [last], args.batch)));
      row.fwdLayers.push(await seconds(() => forwardOnly(engine, ds, layers, args.batch)));
      row.scan.push(await seconds(() => scanTopk(engine, ds, { layers, batchSize: args.batch, perImage: args.perImage })));
    }
    rows.push(row);
    console.error(`${label}: done`);
  }
  return rows;
}

/** VmHWM (peak resident set) of this process, in MiB. */
function peakRssMiB(): number {
  const m = /^VmHWM:\s*(\d+)\s*kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('no VmHWM in /proc/self/status');
  return Number(m[1]) / 1024;
}

async function child(args: Args, pass: 'scan' | 'forward'): Promise<void> {
  const engine = new Engine(loadModel(args.model));
  const layers = resolveTopkLayers(engine, args.layers);
  const last = engine.model.layers[engine.model.layers.length - 1].name;
  const ds = await shapesFor(engine, args.images);
  const s = await seconds(() =>
    pass === 'scan' ? scanTopk(engine, ds, { layers, batchSize: args.batch, perImage: args.perImage }) : forwardOnly(engine, ds, [last], args.batch),
  );
  console.log(JSON.stringify({ pass, images: args.images, seconds: s, vmhwm: peakRssMiB() }));
  await engine.dispose();
}

interface ChildResult { pass: string; images: number; seconds: number; vmhwm: number }

function runChild(args: Args, pass: 'scan' | 'forward', images: number): ChildResult {
  const childArgs = ['--import', 'tsx', join(ROOT, 'bench', 'topk.ts'), '--child', pass, '--model', args.model, '--images', String(images), '--batch', String(args.batch), '--per-image', String(args.perImage)];
  if (args.layers) childArgs.push('--layers', args.layers.join(','));
  const r = spawnSync(process.execPath, childArgs, { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`RSS child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

function machine(): string {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const cpu = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown CPU';
  const nproc = execFileSync('nproc', { encoding: 'utf8' }).trim();
  return `nproc ${nproc} (${availableParallelism()} available), ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, node ${process.version}`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child) return child(args, args.child);
  const loadBefore = loadavg()[0];
  const engine = new Engine(loadModel(args.model));
  const layers = resolveTopkLayers(engine, args.layers);
  let rows: Row[];
  try {
    rows = await throughput(engine, args, layers);
  } finally {
    await engine.dispose();
  }
  const rate = (s: number[]) => args.images / median(s);
  const range = (s: number[]) => `${(args.images / Math.max(...s)).toFixed(0)}-${(args.images / Math.min(...s)).toFixed(0)}`;
  const lines = [
    `Top-k sweep of ${args.model} (layers ${layers.join(', ')}; k 9, at most ${args.perImage} per image), ${args.images} shapes images, batch ${args.batch}; ` +
      `images/s, median of ${args.repeats} (min-max); a ratio is top-k images/s over forward-only images/s.`,
    '',
    '| data | forward-only, last layer | forward-only, scanned maps out | top-k scan | top-k / forward-only last layer | top-k / forward-only maps out |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) =>
      `| ${r.data} | ${rate(r.fwdLast).toFixed(0)} (${range(r.fwdLast)}) | ${rate(r.fwdLayers).toFixed(0)} (${range(r.fwdLayers)}) | ${rate(r.scan).toFixed(0)} (${range(r.scan)}) | ` +
        `${(median(r.fwdLast) / median(r.scan)).toFixed(2)}x | ${(median(r.fwdLayers) / median(r.scan)).toFixed(2)}x |`),
  ];
  if (args.rss) {
    console.error('peak RSS children ...');
    const children = [args.images, args.images * args.rssScale].flatMap((n) => (['scan', 'forward'] as const).map((pass) => runChild(args, pass, n)));
    lines.push(
      '',
      'Peak RSS (VmHWM) of a child process that loads the model and makes one pass (shapes rendered per item): the top-k scan, or forward-only to the last layer for reference:',
      '',
      '| images | pass | time | images/s | VmHWM |',
      '|---|---|---|---|---|',
      ...children.map((c) => `| ${c.images} | ${c.pass === 'scan' ? 'top-k scan' : 'forward-only'} | ${c.seconds.toFixed(1)} s | ${(c.images / c.seconds).toFixed(0)} | ${c.vmhwm.toFixed(0)} MiB |`),
    );
  }
  const cli = process.argv.slice(2).join(' ');
  const facts = `${machine()}; 1-min load average ${loadBefore.toFixed(2)} before, ${loadavg()[0].toFixed(2)} after`;
  const text = lines.join('\n');
  console.log(`${text}\n\nmachine: ${facts}`);
  if (args.record) {
    const date = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
    appendFileSync(join(ROOT, 'bench', 'RESULTS.md'), `\n## ${date}: top-k sweep\n\nCommand: \`npm run bench:topk${cli ? ` -- ${cli}` : ''}\`\n\nMachine: ${facts}\n\n${text}\n`);
    console.log('recorded in bench/RESULTS.md');
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
