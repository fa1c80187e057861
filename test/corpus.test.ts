// Bad files kept as a corpus (test/corpus/, made by hand and by fuzzing): each is refused in one line that names the
// file, with exit code 2 and no output written.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ROOT } from './helpers.js';

const CORPUS = join(ROOT, 'test', 'corpus');
const CLI = join(ROOT, 'src', 'cli', 'main.ts');

/** The command that reads a file of each kind. */
function commandFor(file: string, out: string): string[] {
  if (file.endsWith('.npy')) return ['project', '--model', 'zfnet-small', '--input-npy', file, '--layer', 'relu1', '--feature', '0', '--out', out];
  if (file.endsWith('.png')) return ['project', '--model', 'zfnet-small', '--image', file, '--layer', 'relu1', '--feature', '0', '--out', out];
  return ['project', '--model', file, '--input-npy', join(ROOT, '..', 'shared', 'fixtures', 'small', 'input.npy'), '--layer', 'relu1', '--feature', '0', '--out', out];
}

describe('the corpus of bad files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'convscope-corpus-'));
  // A folder where a file is expected, of each kind.
  const folders = ['folder.npy', 'folder.onnx', 'folder.png'].map((f) => join(dir, f));
  for (const f of folders) mkdirSync(f);
  const files = [...readdirSync(CORPUS).map((f) => join(CORPUS, f)), ...folders];

  test('covers every kind of input file', () => {
    for (const ext of ['.npy', '.safetensors', '.onnx', '.png']) assert.ok(files.filter((f) => f.endsWith(ext)).length >= 2, ext);
  });

  for (const file of files) {
    test(file.replace(`${ROOT}/`, '').replace(`${dir}/`, ''), () => {
      const out = join(dir, `${file.split('/').at(-1)}.out.npy`);
      const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...commandFor(file, out)], { cwd: ROOT, encoding: 'utf8' });
      assert.equal(r.status, 2, r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], /^convscope: /);
      assert.ok(lines[0].includes(file), `the message names the file: ${lines[0]}`);
      assert.doesNotMatch(lines[0], /[:,]$|EISDIR|ENOENT|Invalid (typed array|DataView)/, 'a message for a person, not a system error');
      assert.ok(!existsSync(out), 'no output');
    });
  }
});
