// Option defaults are written once, in the option specs: the help shows them and the getters fall back to them.
import { INTEGRATION_RULES } from '../src/analysis/integrated-gradients.js';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { formatHelp, Options, parseOptions, UsageError, type OptionSpec } from '../src/cli/args.js';
import { COMMANDS, OCCLUSION_MODES, SEED_VALUES } from '../src/cli/commands.js';
import { TOPK_ORDERS } from '../src/cli/topk.js';
import { INIT_SCHEMES } from '../src/cli/training.js';
import { ABLATION_STARTS } from '../src/cli/probe.js';
import { SPLITS } from '../src/data/dataset.js';
import { BACKWARD_RULES, LRN_MODES } from '../src/engine/compile.js';
import { ROOT } from './helpers.js';

const SPECS: Record<string, OptionSpec> = {
  k: { value: true, help: 'activations kept per feature map', default: 9 },
  lr: { value: true, help: 'learning rate', default: 0.01 },
  order: { value: true, help: 'index or max', default: 'index' },
  sizes: { value: true, help: 'sizes', default: '15,30' },
  out: { value: true, help: 'output folder' },
  count: { value: true, help: 'images' },
  quick: { value: false, help: 'a tiny run' },
};

const parse = (argv: string[]) => parseOptions('cmd', argv, SPECS);

describe('formatHelp', () => {
  test('appends (default X) to options with a default, and nothing to the others', () => {
    const lines = formatHelp('cmd', 'does things', SPECS).split('\n');
    const line = (name: string) => lines.find((l) => l.trimStart().startsWith(`--${name} `)) ?? '';
    assert.match(line('k'), /activations kept per feature map \(default 9\)$/);
    assert.match(line('lr'), /learning rate \(default 0\.01\)$/);
    assert.match(line('order'), /index or max \(default index\)$/);
    assert.match(line('sizes'), /sizes \(default 15,30\)$/);
    assert.match(line('out'), /output folder$/);
    assert.match(line('quick'), /a tiny run$/);
  });

  test("every command's help shows each spec default once, generated", () => {
    for (const [name, command] of Object.entries(COMMANDS)) {
      const help = formatHelp(name, command.summary, command.options);
      for (const [option, spec] of Object.entries(command.options)) {
        if (spec.default === undefined) continue;
        assert.doesNotMatch(spec.help, /\(default\b/, `${name} --${option}: the help text spells its default`);
        const line = help.split('\n').find((l) => l.trimStart().startsWith(`--${option} `));
        assert.ok(line?.endsWith(`(default ${spec.default})`), `${name} --${option}: ${line}`);
      }
    }
  });
});

describe('Options getters', () => {
  test('fall back to the spec default, validated like a given value', () => {
    const o = parse([]);
    assert.equal(o.int('k', 1), 9);
    assert.equal(o.number('lr'), 0.01);
    assert.equal(o.choice('order', ['index', 'max'] as const), 'index');
    assert.deepEqual(o.numbers('sizes'), [15, 30]);
    assert.equal(o.string('k'), '9');
    assert.equal(o.required('order'), 'index');
    assert.equal(o.has('k'), false, 'a default is not a given option');
    assert.equal(o.flag('quick'), false);
    assert.throws(() => o.int('k', 10), /--k must be an integer >= 10, got '9'/);
    assert.throws(() => o.choice('order', ['max'] as const), /--order must be one of max; got 'index'/);
  });

  test('integers are decimal digits and numbers are not empty: no \'\' read as 0, no hex, no exponent counts', () => {
    for (const bad of ['', ' ', '0x10', '1e3', '1.5', '12abc', '9007199254740993']) {
      assert.throws(() => parse(['--k', bad]).int('k'), /--k must be an integer, got/, JSON.stringify(bad));
    }
    assert.equal(parse(['--k', '-3']).int('k'), -3);
    assert.equal(parse(['--k', ' 42 ']).int('k'), 42);
    assert.throws(() => parse(['--lr', '']).number('lr'), /--lr must be a number/);
    assert.throws(() => parse(['--sizes', '1,,2']).numbers('sizes'), /--sizes must be comma-separated numbers/);
  });

  test('a given value wins over the default', () => {
    const o = parse(['--k', '3', '--lr=0.5', '--order', 'max', '--sizes', '1,2,3', '--quick']);
    assert.equal(o.int('k', 1), 3);
    assert.equal(o.number('lr'), 0.5);
    assert.equal(o.choice('order', ['index', 'max'] as const), 'max');
    assert.deepEqual(o.numbers('sizes'), [1, 2, 3]);
    assert.equal(o.has('k'), true);
    assert.equal(o.flag('quick'), true);
  });

  test('an option with neither value nor default: int, number, choice and required throw the usage error; string and numbers give undefined', () => {
    const o = parse([]);
    for (const get of [() => o.int('count'), () => o.number('count'), () => o.choice('count', ['a'] as const), () => o.required('count')]) {
      assert.throws(get, (e: unknown) => e instanceof UsageError && e.message === 'cmd needs --count');
    }
    assert.equal(o.string('count'), undefined);
    assert.equal(o.numbers('count'), undefined);
  });

  test('reading an option the command does not declare is a bug, not a usage error', () => {
    const o = parse([]);
    assert.throws(() => o.string('nope'), (e: unknown) => !(e instanceof UsageError) && /cmd reads --nope, which it does not declare/.test(String(e)));
  });
});

/**
 * How each command reads each option that has a default: the getter and its minimum or choices, as in src/cli/.
 * The table must name exactly the options with a default, so a new default cannot skip this check.
 */
type Read = (o: Options) => unknown;
const int = (name: string, min?: number): Read => (o) => o.int(name, min);
const num = (name: string): Read => (o) => o.number(name);
const str = (name: string): Read => (o) => o.required(name);
const choice = (name: string, choices: readonly string[]): Read => (o) => o.choice(name, choices);
const positiveInts = (name: string): Read => (o) => {
  const v = o.numbers(name);
  assert.ok(v && v.every((n) => Number.isInteger(n) && n > 0), `--${name} default ${v}`);
  return v;
};
const renormCap = (o: Options): unknown => {
  const v = o.required('renorm-cap');
  assert.ok(v === 'off' || Number(v) > 0, `--renorm-cap default ${v}`);
  return v;
};
const positive = (name: string, max = Infinity): Read => (o) => {
  const v = o.number(name);
  assert.ok(v > 0 && v <= max, `--${name} default ${v}`);
  return v;
};
const nonNegative = (name: string): Read => (o) => {
  const v = o.number(name);
  assert.ok(v >= 0, `--${name} default ${v}`);
  return v;
};

const MODEL_READS = { 'model-seed': int('model-seed') };

const READS: Record<string, Record<string, Read>> = {
  train: {
    model: str('model'), epochs: int('epochs', 1), out: str('out'), 'batch-size': int('batch-size', 1), lr: positive('lr'), momentum: nonNegative('momentum'),
    'weight-decay': nonNegative('weight-decay'), schedule: str('schedule'), 'renorm-cap': renormCap, crop: int('crop', 0), init: choice('init', INIT_SCHEMES),
    seed: int('seed'), 'checkpoint-every': int('checkpoint-every', 1),
  },
  evolve: { features: int('features', 1), seed: int('seed'), out: str('out'), 'shard-size': int('shard-size', 1) },
  probe: {
    ...MODEL_READS, 'per-class': positiveInts('per-class'), splits: int('splits', 1), seed: int('seed'), pool: int('pool', 1),
    l2: nonNegative('l2'), 'batch-size': int('batch-size', 1), 'shard-size': int('shard-size', 1),
  },
  ablate: {
    ...MODEL_READS, epochs: int('epochs', 1), start: choice('start', ABLATION_STARTS), lr: positive('lr'), schedule: str('schedule'),
    'batch-size': int('batch-size', 1), seed: int('seed'),
  },
  topk: {
    ...MODEL_READS, k: int('k', 1), 'per-image': int('per-image', 1), order: choice('order', TOPK_ORDERS), 'per-page': int('per-page', 1),
    'batch-size': int('batch-size', 1), 'project-batch': int('project-batch', 1), rule: choice('rule', BACKWARD_RULES), lrn: choice('lrn', LRN_MODES),
    'checkpoint-every': int('checkpoint-every', 1), 'synth-steps': int('synth-steps', 1), 'shard-size': int('shard-size', 1),
  },
  worker: { concurrency: int('concurrency', 1), 'lock-seconds': int('lock-seconds', 1) },
  attribute: {
    ...MODEL_READS, method: str('method'), steps: int('steps', 2), integration: choice('integration', INTEGRATION_RULES), baseline: str('baseline'),
    samples: int('samples', 1), noise: nonNegative('noise'), seed: int('seed'), batch: int('batch', 1),
  },
  faithfulness: {
    ...MODEL_READS, methods: str('methods'), count: int('count', 1), steps: int('steps', 1),
    'ig-steps': int('ig-steps', 2), samples: int('samples', 1),
  },
  synthesize: {
    ...MODEL_READS, features: str('features'), objective: choice('objective', ['map', 'unit']), parameterization: choice('parameterization', ['pixel', 'fourier']),
    steps: int('steps', 1), decay: nonNegative('decay'), blur: nonNegative('blur'), 'blur-every': int('blur-every', 1), 'norm-percentile': nonNegative('norm-percentile'),
    'contribution-percentile': nonNegative('contribution-percentile'), seed: int('seed'), batch: int('batch', 1),
  },
  invariance: { ...MODEL_READS, count: int('count', 1), batch: int('batch', 1) },
  correspond: {
    ...MODEL_READS, class: str('class'), count: int('count', 2), 'max-box': positive('max-box', 1), random: int('random', 1), seed: int('seed'), batch: int('batch', 1),
  },
  filters: { ...MODEL_READS, out: str('out') },
  'compare-arch': { epochs: int('epochs', 1), 'batch-size': int('batch-size', 1), lr: positive('lr'), seed: int('seed'), out: str('out') },
  serve: { ...MODEL_READS, 'scan-limit': int('scan-limit', 1), port: int('port', 0), host: str('host'), 'upload-limit': int('upload-limit', 1) },
  inspect: { ...MODEL_READS },
  project: {
    ...MODEL_READS, unit: str('unit'), rule: choice('rule', BACKWARD_RULES), lrn: choice('lrn', LRN_MODES), 'seed-value': choice('seed-value', SEED_VALUES),
  },
  demo: { out: str('out'), data: str('data'), model: str('model'), epochs: int('epochs', 1), scan: int('scan', 1) },
  report: { run: str('run') },
  occlude: { ...MODEL_READS, fill: str('fill'), mode: choice('mode', OCCLUSION_MODES), count: int('count', 1) },
};

describe('every command', () => {
  test('reads each spec default with its own getter without a usage error, and gets the default back', () => {
    assert.deepEqual(Object.keys(READS).sort(), Object.keys(COMMANDS).sort());
    for (const [name, command] of Object.entries(COMMANDS)) {
      const withDefault = Object.entries(command.options).filter(([, s]) => s.default !== undefined).map(([n]) => n);
      assert.deepEqual(Object.keys(READS[name]).sort(), withDefault.sort(), `${name}: the options with a default`);
      const o = parseOptions(name, [], command.options);
      for (const [option, read] of Object.entries(READS[name])) {
        const value = read(o);
        const expected = command.options[option].default;
        assert.equal(String(Array.isArray(value) ? value.join(',') : value), String(expected), `${name} --${option}`);
      }
    }
  });

  test('option defaults that the library defines are the library constants', async () => {
    const { PAPER_TRAINING } = await import('../src/train/trainer.js');
    const { DEFAULT_UPLOAD_LIMIT } = await import('../src/server/server.js');
    const { DEMO_DEFAULTS } = await import('../src/cli/demo.js');
    const { ZF_SETTINGS } = await import('../src/analysis/project.js');
    const d = (command: string, option: string) => COMMANDS[command].options[option].default;
    assert.equal(d('train', 'lr'), PAPER_TRAINING.lr);
    assert.equal(d('train', 'momentum'), PAPER_TRAINING.momentum);
    assert.equal(d('train', 'weight-decay'), PAPER_TRAINING.weightDecay);
    assert.equal(d('train', 'checkpoint-every'), PAPER_TRAINING.checkpointEvery);
    assert.equal(d('compare-arch', 'lr'), PAPER_TRAINING.lr);
    assert.equal(d('serve', 'upload-limit'), DEFAULT_UPLOAD_LIMIT);
    assert.equal(d('demo', 'epochs'), DEMO_DEFAULTS.epochs);
    assert.equal(d('demo', 'scan'), DEMO_DEFAULTS.scan);
    assert.equal(d('project', 'rule'), ZF_SETTINGS.rule);
    assert.equal(d('topk', 'lrn'), ZF_SETTINGS.lrn);
    const { IG_DEFAULTS } = await import('../src/analysis/integrated-gradients.js');
    const { SMOOTHGRAD_DEFAULTS } = await import('../src/analysis/smoothgrad.js');
    const { SYNTHESIS_DEFAULTS } = await import('../src/analysis/synthesize.js');
    const { CURVE_STEPS } = await import('../src/analysis/faithfulness.js');
    assert.equal(d('attribute', 'steps'), IG_DEFAULTS.steps);
    assert.equal(d('attribute', 'integration'), IG_DEFAULTS.integration);
    assert.equal(d('attribute', 'samples'), SMOOTHGRAD_DEFAULTS.samples);
    assert.equal(d('attribute', 'noise'), SMOOTHGRAD_DEFAULTS.noise);
    assert.equal(d('faithfulness', 'steps'), CURVE_STEPS);
    assert.equal(d('synthesize', 'steps'), SYNTHESIS_DEFAULTS.steps);
    assert.equal(d('synthesize', 'decay'), SYNTHESIS_DEFAULTS.decay);
    assert.equal(d('topk', 'synth-steps'), SYNTHESIS_DEFAULTS.steps);
  });

  test('the split choices of topk are the dataset splits', () => {
    const o = parseOptions('topk', ['--split', 'test'], COMMANDS.topk.options);
    assert.equal(o.choice('split', SPLITS), 'test');
  });
});

describe('a missing required option', () => {
  const CLI = join(ROOT, 'src', 'cli', 'main.ts');
  const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, encoding: 'utf8' });

  for (const [args, message] of [
    [['inspect'], 'convscope: inspect needs --model (see convscope inspect --help)'],
    [['project', '--model', 'zfnet-small', '--layer', 'relu1', '--out', 'never-written.npy'], 'convscope: project needs --feature (see convscope project --help)'],
  ] as const) {
    test(`${args.join(' ')}: one line, exit 2`, () => {
      const r = run([...args]);
      assert.equal(r.status, 2, r.stderr);
      assert.equal(r.stderr, `${message}\n`);
      assert.equal(r.stdout, '');
    });
  }
});
