// The layer rule of .dependency-cruiser.cjs (docs/architecture.md), run on small trees that break it on purpose.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ROOT } from './helpers.js';

const CONFIG = join(ROOT, '.dependency-cruiser.cjs');
const CRUISE = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Cruises a tree of files (path -> source) under a fresh folder; returns the exit status and the report. */
function cruise(files: Record<string, string>): { status: number | null; out: string } {
  const dir = mkdtempSync(join(tmpdir(), 'convscope-lint-'));
  dirs.push(dir);
  const all = { 'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true } }), ...files };
  for (const [path, text] of Object.entries(all)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  const r = spawnSync(process.execPath, [CRUISE, 'src', '--config', CONFIG], { cwd: dir, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('the layer rule', () => {
  it('passes a tree whose imports point down', () => {
    const r = cruise({
      'src/tensor.ts': 'export const t = 1;\n',
      'src/model/m.ts': "import { t } from '../tensor.js';\nexport const m = t;\n",
      'src/engine/e.ts': "import { m } from '../model/m.js';\nexport const e = m;\n",
      'src/cli/c.ts': "import { e } from '../engine/e.js';\nexport const c = e;\n",
    });
    assert.equal(r.status, 0, r.out);
  });

  it('fails on an upward import and names the rule and the files', () => {
    const r = cruise({
      'src/render/draw.ts': 'export const draw = 1;\n',
      'src/analysis/a.ts': "import { draw } from '../render/draw.js';\nexport const a = draw;\n",
    });
    assert.notEqual(r.status, 0);
    assert.match(r.out, /layer-analysis: src\/analysis\/a\.ts → src\/render\/draw\.ts/);
  });

  it('fails on an import between siblings of one layer (engine and data)', () => {
    const r = cruise({
      'src/data/d.ts': 'export const d = 1;\n',
      'src/engine/e.ts': "import { d } from '../data/d.js';\nexport const e = d;\n",
    });
    assert.notEqual(r.status, 0);
    assert.match(r.out, /layer-engine: src\/engine\/e\.ts → src\/data\/d\.ts/);
  });

  it('fails on a runtime import cycle, not on a type-only one', () => {
    const cycle = cruise({
      'src/model/a.ts': "import { b } from './b.js';\nexport const a = () => b;\n",
      'src/model/b.ts': "import { a } from './a.js';\nexport const b = () => a;\n",
    });
    assert.notEqual(cycle.status, 0);
    assert.match(cycle.out, /no-runtime-cycle/);
    const typesOnly = cruise({
      'src/model/a.ts': "import type { B } from './b.js';\nexport interface A { b?: B }\nexport const a = 1;\n",
      'src/model/b.ts': "import { a } from './a.js';\nexport interface B { n: number }\nexport const b = a;\n",
    });
    assert.equal(typesOnly.status, 0, typesOnly.out);
  });
});
